//! The importer of the embedded CRM: [`EmbeddedCrm::import`] reads a CSV or
//! JSON-lines file and upserts its rows in batches.
//!
//! The file is streamed: memory holds one batch of rows (plus, in strict
//! mode, every good row until the end, since nothing may be written before
//! the whole file is known to be good). Rows that can't be imported are
//! counted and reported by line; they never stop the import.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::embedded::{check_email, CrmError, EmbeddedCrm, Staged};
use super::Record;

/// How many bad rows an [`ImportReport`] lists in detail. A file in the wrong
/// format (say, `;`-separated) makes every row bad; past a hundred, more
/// lines say nothing new to the operator, and the report must stay small
/// enough to print. [`ImportReport::bad_rows`] still counts them all.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Rows per batch: large enough that a 100 000-row file is a handful of
/// writes, small enough that a batch stays a few MiB.
const BATCH_ROWS: usize = 10_000;

/// Progress is reported at most every 1% of the file, and at least every
/// 64 KiB apart, so a small file doesn't get a call per row.
const MIN_PROGRESS_STEP: u64 = 64 * 1024;

/// One row that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based physical line of the file where the row starts.
    pub line: u64,
    /// What is wrong, e.g. `invalid email "bob"`.
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Rows upserted (0 when a strict import was refused). A row repeating
    /// an email counts each time.
    pub imported: u64,
    /// Rows that could not be imported.
    pub bad_rows: u64,
    /// The first [`MAX_REPORTED_ERRORS`] bad rows, in file order.
    pub errors: Vec<RowError>,
}

/// How to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOptions {
    /// With any bad row, import nothing (bad rows are still all reported, up
    /// to the cap).
    pub strict: bool,
}

impl EmbeddedCrm {
    /// Import a file: CSV (`.csv`) or JSON lines (`.jsonl`, `.ndjson`, and
    /// `.json` read as one object per line), chosen by extension, case aside.
    ///
    /// - **CSV** needs a header row. The one column named `email` (trimmed,
    ///   case aside) is the key; every other column is a field, named by its
    ///   trimmed header. Blank cells are left out of the record. A row with a
    ///   different number of cells than the header is bad.
    /// - **JSON lines**: each line that is not blank and doesn't start with
    ///   `#` is a flat JSON object. Strings are kept, numbers and booleans
    ///   become strings (as JSON writes them: `1.50` becomes `"1.5"`), nulls
    ///   are left out; a nested object or array makes the row bad. The
    ///   `email` key (case aside) is the key.
    ///
    /// A row without a valid email is bad. Bad rows are counted and the first
    /// [`MAX_REPORTED_ERRORS`] reported with their 1-based line; good rows are
    /// upserted in batches of about 10 000. With [`ImportOptions::strict`], a
    /// file with any bad row imports nothing.
    ///
    /// Rows are upserts: re-importing a file changes nothing, a changed row
    /// replaces its record, and when a file repeats an email **the later row
    /// wins**. Records absent from the file are kept.
    ///
    /// `progress(bytes_read, total_bytes)` is called at the start, about
    /// every 1% of the file, and once at the end with `(total, total)`.
    ///
    /// Errors are for the file as a whole (unreadable, unknown extension,
    /// unusable CSV header) and for the store. A non-strict import stopped
    /// by one may have written some batches; importing again completes it.
    pub fn import(
        &self,
        path: &Path,
        options: ImportOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ImportReport, CrmError> {
        let format = Format::of(path)?;
        let read_err = |source| CrmError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let total = file.metadata().map_err(read_err)?.len();
        let mut progress = Progress::new(total, progress);
        let mut sink = Sink::new(self, options);
        let read = match format {
            Format::Csv => read_csv(path, file, &mut progress, &mut sink)?,
            Format::JsonLines => read_jsonl(path, file, &mut progress, &mut sink)?,
        };
        let report = sink.finish()?;
        progress.finish(read);
        Ok(report)
    }
}

/// The kinds of file [`EmbeddedCrm::import`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

impl Format {
    fn of(path: &Path) -> Result<Format, CrmError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("jsonl" | "ndjson" | "json") => Ok(Format::JsonLines),
            _ => Err(CrmError::BadFormat(format!(
                "{}: unknown CRM import format; the file name must end in .csv, .jsonl, .ndjson or .json",
                path.display()
            ))),
        }
    }
}

/// Where parsed rows go: checks the email, stages good rows, writes full
/// batches, and keeps the report.
struct Sink<'a> {
    crm: &'a EmbeddedCrm,
    strict: bool,
    staged: Staged,
    /// Strict mode: full batches waiting for the end of the file.
    held: Vec<Staged>,
    good: u64,
    report: ImportReport,
}

impl<'a> Sink<'a> {
    fn new(crm: &'a EmbeddedCrm, options: ImportOptions) -> Self {
        Sink {
            crm,
            strict: options.strict,
            staged: Staged::default(),
            held: Vec::new(),
            good: 0,
            report: ImportReport::default(),
        }
    }

    fn good(&mut self, row: Row) -> Result<(), CrmError> {
        self.good += 1;
        // A refused strict import only needs the remaining rows checked.
        if self.strict && self.report.bad_rows > 0 {
            return Ok(());
        }
        self.staged.add(&row.key, &row.domain, &row.record)?;
        if self.staged.rows() >= BATCH_ROWS {
            self.write_batch()?;
        }
        Ok(())
    }

    fn bad(&mut self, line: u64, reason: String) {
        self.report.bad_rows += 1;
        if self.report.errors.len() < MAX_REPORTED_ERRORS {
            self.report.errors.push(RowError { line, reason });
        }
        if self.strict {
            // Nothing will be written: free what was held.
            self.held = Vec::new();
            self.staged = Staged::default();
        }
    }

    fn write_batch(&mut self) -> Result<(), CrmError> {
        let staged = std::mem::take(&mut self.staged);
        if staged.rows() == 0 {
            return Ok(());
        }
        if self.strict {
            self.held.push(staged);
            Ok(())
        } else {
            self.crm.apply(staged)
        }
    }

    fn finish(mut self) -> Result<ImportReport, CrmError> {
        if self.strict && self.report.bad_rows > 0 {
            return Ok(self.report);
        }
        self.write_batch()?;
        for staged in std::mem::take(&mut self.held) {
            self.crm.apply(staged)?;
        }
        self.crm.flush()?;
        self.report.imported = self.good;
        Ok(self.report)
    }
}

/// A good row: its key and domain (see [`check_email`]) and its fields.
struct Row {
    key: String,
    domain: String,
    record: Record,
}

/// A parsed row, or why it is bad.
type Parsed = Result<Row, String>;

fn checked(email: &str, record: Record) -> Parsed {
    let (key, domain) = check_email(email)?;
    Ok(Row {
        key,
        domain,
        record,
    })
}

/// Calls the caller's progress callback, throttled.
struct Progress<'a> {
    total: u64,
    step: u64,
    next: u64,
    report: &'a mut dyn FnMut(u64, u64),
}

impl<'a> Progress<'a> {
    fn new(total: u64, report: &'a mut dyn FnMut(u64, u64)) -> Self {
        report(0, total);
        let step = (total / 100).max(MIN_PROGRESS_STEP);
        Progress {
            total,
            step,
            next: step,
            report,
        }
    }

    fn at(&mut self, read: u64) {
        if read >= self.next {
            // The file may grow while it is read; never report past the total.
            (self.report)(read.min(self.total), self.total);
            self.next = read.saturating_add(self.step);
        }
    }

    fn finish(self, read: u64) {
        let end = self.total.max(read);
        (self.report)(end, end);
    }
}

/// Read a CSV file into `sink`; returns the bytes read.
fn read_csv(
    path: &Path,
    file: File,
    progress: &mut Progress<'_>,
    sink: &mut Sink<'_>,
) -> Result<u64, CrmError> {
    let read_err = |e: csv::Error| CrmError::Read {
        path: path.to_owned(),
        source: e.into(),
    };
    let bad_format = |what: String| CrmError::BadFormat(format!("{}: {what}", path.display()));
    // flexible: rows of the wrong length are reported per row, not fatal.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(file);
    let mut row = csv::ByteRecord::new();
    if !reader.read_byte_record(&mut row).map_err(read_err)? {
        return Err(bad_format(
            "the CSV file is empty; it needs a header row with an \"email\" column".to_owned(),
        ));
    }
    let header = parse_header(&row).map_err(bad_format)?;
    let email_column = header.email;
    let names = header.names;
    let mut lines: Option<LineCursor> = None;
    while reader.read_byte_record(&mut row).map_err(read_err)? {
        let parsed = if row.len() == names.len() {
            csv_row(&row, &names, email_column)
        } else {
            Err(format!(
                "expected {} {}, found {}",
                names.len(),
                if names.len() == 1 { "cell" } else { "cells" },
                row.len()
            ))
        };
        match parsed {
            Ok(good) => sink.good(good)?,
            Err(reason) => {
                // Only bad rows need their line, so clean files skip this.
                let start = row.position().map_or(0, csv::Position::byte);
                let cursor = match &mut lines {
                    Some(cursor) => cursor,
                    None => lines.insert(LineCursor::open(path)?),
                };
                sink.bad(cursor.line_at(start)?, reason);
            }
        }
        progress.at(reader.position().byte());
    }
    Ok(reader.position().byte())
}

/// Physical line numbers of CSV records, from a second read of the file.
///
/// csv's `Position::line()` can't be used: a record's position is where the
/// previous one ended, so after blank lines (which csv skips) it names the
/// first blank line, and with CRLF line ends the `\n` of the previous line
/// is still ahead of it, giving the previous line. A record's byte offset
/// has the same quirk, so this cursor counts `\n`s up to it, then skips the
/// `\r`/`\n` run that csv skipped; the record starts after that. It only
/// moves forward, and is only opened for bad rows.
struct LineCursor {
    reader: BufReader<File>,
    path: std::path::PathBuf,
    byte: u64,
    line: u64,
}

impl LineCursor {
    fn open(path: &Path) -> Result<Self, CrmError> {
        let file = File::open(path).map_err(|source| CrmError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(LineCursor {
            reader: BufReader::with_capacity(64 * 1024, file),
            path: path.to_owned(),
            byte: 0,
            line: 1,
        })
    }

    /// The 1-based line of the record csv reported at byte `start`.
    fn line_at(&mut self, start: u64) -> Result<u64, CrmError> {
        self.advance(|byte, _| byte < start)?;
        self.advance(|_, b| matches!(b, b'\r' | b'\n'))?;
        Ok(self.line)
    }

    /// Move past the bytes for which `keep_going(offset, byte)` holds.
    fn advance(&mut self, keep_going: impl Fn(u64, u8) -> bool) -> Result<(), CrmError> {
        loop {
            let buf = self.reader.fill_buf().map_err(|source| CrmError::Read {
                path: self.path.clone(),
                source,
            })?;
            let mut taken = 0;
            for &b in buf {
                if !keep_going(self.byte + taken as u64, b) {
                    break;
                }
                self.line += u64::from(b == b'\n');
                taken += 1;
            }
            let exhausted = buf.is_empty() || taken < buf.len();
            self.reader.consume(taken);
            self.byte += taken as u64;
            if exhausted {
                return Ok(());
            }
        }
    }
}

/// A CSV header: the field names (trimmed) and which column is the email.
struct Header {
    names: Vec<String>,
    email: usize,
}

fn parse_header(row: &csv::ByteRecord) -> Result<Header, String> {
    let mut names: Vec<String> = Vec::with_capacity(row.len());
    let mut email = None;
    for (i, cell) in row.iter().enumerate() {
        let name = std::str::from_utf8(cell)
            .map_err(|_| format!("CSV header cell {} is not valid UTF-8", i + 1))?
            .trim()
            .to_owned();
        if name.is_empty() {
            return Err(format!(
                "CSV header cell {} is blank; every column needs a name",
                i + 1
            ));
        }
        if name.eq_ignore_ascii_case("email") {
            if email.is_some() {
                return Err("the CSV header has more than one \"email\" column".to_owned());
            }
            email = Some(i);
        } else if names.contains(&name) {
            return Err(format!("the CSV header names column {name:?} twice"));
        }
        names.push(name);
    }
    let email = email.ok_or_else(|| {
        format!(
            "the CSV header has no \"email\" column (found: {})",
            names.join(", ")
        )
    })?;
    Ok(Header { names, email })
}

/// One CSV data row of the header's length: the email and the other fields.
fn csv_row(row: &csv::ByteRecord, names: &[String], email_column: usize) -> Parsed {
    let mut email = String::new();
    let mut record = Record::new();
    for (i, (cell, name)) in row.iter().zip(names).enumerate() {
        let cell = std::str::from_utf8(cell)
            .map_err(|_| format!("cell {} ({name}) is not valid UTF-8", i + 1))?;
        if i == email_column {
            cell.clone_into(&mut email);
        } else if !cell.trim().is_empty() {
            record.insert(name.clone(), cell.to_owned());
        }
    }
    checked(&email, record)
}

/// Read a JSON-lines file into `sink`; returns the bytes read.
fn read_jsonl(
    path: &Path,
    file: File,
    progress: &mut Progress<'_>,
    sink: &mut Sink<'_>,
) -> Result<u64, CrmError> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut read = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| CrmError::Read {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            return Ok(read);
        }
        line += 1;
        read += n as u64;
        let bytes = match (line, buf.strip_prefix(b"\xEF\xBB\xBF")) {
            (1, Some(rest)) => rest,
            _ => &buf[..],
        };
        match json_row(bytes) {
            None => {}
            Some(Ok(good)) => sink.good(good)?,
            Some(Err(reason)) => sink.bad(line, reason),
        }
        progress.at(read);
    }
}

/// One JSON line: `None` for a blank or `#` line, else the email and the
/// other fields, or why the row is bad.
fn json_row(bytes: &[u8]) -> Option<Parsed> {
    use serde_json::Value;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(Err("not valid UTF-8".to_owned()));
    };
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            return Some(Err(format!(
                "not a JSON object but {}",
                super::json_kind(&other)
            )))
        }
        Err(e) => return Some(Err(format!("not JSON: {e}"))),
    };
    let mut email = None;
    let mut record = Record::new();
    for (key, value) in object {
        let value = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            nested @ (Value::Array(_) | Value::Object(_)) => {
                return Some(Err(format!(
                    "field {key:?} is {}; only strings, numbers and booleans are allowed",
                    super::json_kind(&nested)
                )))
            }
        };
        if key.eq_ignore_ascii_case("email") {
            if email.replace(value).is_some() {
                return Some(Err("more than one \"email\" key".to_owned()));
            }
        } else {
            record.insert(key, value);
        }
    }
    Some(checked(email.as_deref().unwrap_or_default(), record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn crm() -> EmbeddedCrm {
        let db = crate::storage::crm_records::CrmDb::temporary().unwrap();
        EmbeddedCrm::open(&db, "test").unwrap()
    }

    fn file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn import(crm: &EmbeddedCrm, path: &Path, strict: bool) -> ImportReport {
        crm.import(path, ImportOptions { strict }, &mut |_, _| {})
            .unwrap()
    }

    fn rec(fields: &[(&str, &str)]) -> Record {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err(line: u64, reason: &str) -> RowError {
        RowError {
            line,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn csv_import_keys_on_the_email_column_and_leaves_out_blank_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "crm.CSV",
            b"\xEF\xBB\xBF name , EMAIL ,region,tier\r\n\
              Ren Storrie,RStorrie@Pinnilly.com,EMEA,gold\r\n\
              \"Vance, Adele\",adelev@contoso.com,, \r\n",
        );
        let crm = crm();
        let report = import(&crm, &path, false);
        assert_eq!(
            report,
            ImportReport {
                imported: 2,
                ..Default::default()
            }
        );
        assert_eq!(
            crm.by_email("rstorrie@pinnilly.com").unwrap(),
            Some(rec(&[
                ("name", "Ren Storrie"),
                ("region", "EMEA"),
                ("tier", "gold")
            ]))
        );
        assert_eq!(
            crm.by_email("ADELEV@contoso.com").unwrap(),
            Some(rec(&[("name", "Vance, Adele")]))
        );
    }

    #[test]
    fn jsonl_import_converts_scalars_and_skips_comments_blanks_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"# export of 2024-05-01\n\
            {\"Email\":\"A@X.com\",\"tier\":\"gold\",\"seats\":12,\"ratio\":0.5,\"vip\":true,\"fax\":null}\n\
            \n   \n\
            {\"email\":\"b@x.com\",\"region\":\"EMEA\"}\r\n";
        let crm = crm();
        for name in ["crm.jsonl", "crm.ndjson", "crm.json"] {
            let report = import(&crm, &file(&dir, name, content), false);
            assert_eq!(report.imported, 2, "{name}");
            assert_eq!(report.bad_rows, 0, "{name}");
        }
        assert_eq!(
            crm.by_email("a@x.com").unwrap(),
            Some(rec(&[
                ("tier", "gold"),
                ("seats", "12"),
                ("ratio", "0.5"),
                ("vip", "true")
            ]))
        );
        assert_eq!(
            crm.by_email("b@x.com").unwrap(),
            Some(rec(&[("region", "EMEA")]))
        );
        assert_eq!(crm.len(), 2);
    }

    #[test]
    fn csv_bad_rows_are_reported_by_physical_line_and_good_rows_imported() {
        let dir = tempfile::tempdir().unwrap();
        let lf: &[u8] = b"email,region,note\n\
              a@x.com,EMEA,\"two\nlines\"\n\
              b@x.com,EMEA\n\
              \n\
              bob,NA,\n\
              ,NA,\n\
              c@x.com,NA,ok\n\
              \n\n\
              d@x.com,NA,\xFF\n\
              e@localhost,NA,";
        let crlf: Vec<u8> = lf
            .iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect();
        // Blank lines and CRLF are where csv's own line numbers go wrong.
        for (name, content, note) in [
            ("lf.csv", lf.to_vec(), "two\nlines"),
            ("crlf.csv", crlf, "two\r\nlines"),
        ] {
            let crm = crm();
            let report = import(&crm, &file(&dir, name, &content), false);
            assert_eq!(report.imported, 2, "{name}");
            assert_eq!(report.bad_rows, 5, "{name}");
            assert_eq!(
                report.errors,
                vec![
                    err(4, "expected 3 cells, found 2"),
                    err(6, "invalid email \"bob\""),
                    err(7, "missing email"),
                    err(11, "cell 3 (note) is not valid UTF-8"),
                    err(12, "invalid email \"e@localhost\""),
                ],
                "{name}"
            );
            assert_eq!(
                report.errors[1].to_string(),
                "line 6: invalid email \"bob\""
            );
            assert_eq!(
                crm.by_email("a@x.com").unwrap(),
                Some(rec(&[("region", "EMEA"), ("note", note)])),
                "{name}"
            );
            assert!(crm.by_email("c@x.com").unwrap().is_some(), "{name}");
            assert_eq!(crm.len(), 2, "{name}");
        }
    }

    #[test]
    fn jsonl_bad_rows_are_reported_by_line_and_good_rows_imported() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "crm.jsonl",
            b"{\"email\":\"a@x.com\",\"tier\":\"gold\"}\n\
              {\"email\":\"b@x.com\",\"address\":{\"city\":\"Oslo\"}}\n\
              {\"email\":\"c@x.com\",\"tags\":[\"vip\"]}\n\
              email,tier\n\
              [1,2]\n\
              # a comment\n\
              {\"tier\":\"gold\"}\n\
              {\"email\":\"d@x.com\",\"EMAIL\":\"e@x.com\"}\n\
              {\"email\":\"f@x.com\"}\n",
        );
        let crm = crm();
        let report = import(&crm, &path, false);
        assert_eq!(report.imported, 2);
        assert_eq!(report.bad_rows, 6);
        let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 7, 8]);
        let reasons: Vec<&str> = report.errors.iter().map(|e| e.reason.as_str()).collect();
        assert!(
            reasons[0].starts_with("field \"address\" is an object"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].starts_with("field \"tags\" is an array"),
            "{reasons:?}"
        );
        assert!(reasons[2].starts_with("not JSON: "), "{reasons:?}");
        assert_eq!(reasons[3], "not a JSON object but an array");
        assert_eq!(reasons[4], "missing email");
        assert_eq!(reasons[5], "more than one \"email\" key");
        assert!(crm.by_email("a@x.com").unwrap().is_some());
        assert!(crm.by_email("f@x.com").unwrap().is_some());
        assert!(crm.by_email("b@x.com").unwrap().is_none());
    }

    #[test]
    fn strict_mode_imports_nothing_when_any_row_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = String::from("email,tier\n");
        // More than a batch of good rows before the bad one, so a batch
        // written early would show.
        for i in 0..BATCH_ROWS + 5 {
            content.push_str(&format!("u{i}@x.com,gold\n"));
        }
        content.push_str("nobody,gold\nz@x.com\n");
        let path = file(&dir, "crm.csv", content.as_bytes());
        let crm = crm();
        let report = import(&crm, &path, true);
        let bad_line = BATCH_ROWS as u64 + 7;
        assert_eq!(report.imported, 0);
        assert_eq!(report.bad_rows, 2);
        assert_eq!(
            report.errors,
            vec![
                err(bad_line, "invalid email \"nobody\""),
                err(bad_line + 1, "expected 2 cells, found 1"),
            ]
        );
        assert!(crm.is_empty());

        let good = file(&dir, "good.csv", b"email,tier\na@x.com,gold\n");
        assert_eq!(import(&crm, &good, true).imported, 1);
        assert_eq!(crm.len(), 1);
    }

    #[test]
    fn the_error_list_is_capped_but_every_bad_row_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = String::new();
        for i in 0..250 {
            content.push_str(&format!(
                "{{\"email\":\"bad{i}\"}}\n{{\"email\":\"ok{i}@x.com\"}}\n"
            ));
        }
        let path = file(&dir, "crm.jsonl", content.as_bytes());
        let crm = crm();
        let report = import(&crm, &path, false);
        assert_eq!(report.bad_rows, 250);
        assert_eq!(report.imported, 250);
        assert_eq!(report.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(report.errors[0], err(1, "invalid email \"bad0\""));
        assert_eq!(
            report.errors[MAX_REPORTED_ERRORS - 1],
            err(
                2 * MAX_REPORTED_ERRORS as u64 - 1,
                "invalid email \"bad99\""
            )
        );
    }

    #[test]
    fn progress_reaches_the_total_without_a_call_per_row() {
        let dir = tempfile::tempdir().unwrap();
        for (name, header, row) in [
            ("p.csv", "email,tier\n", "user{i}@example.com,gold\n"),
            (
                "p.jsonl",
                "",
                "{\"email\":\"user{i}@example.com\",\"tier\":\"gold\"}\n",
            ),
        ] {
            let mut content = header.to_owned();
            for i in 0..50_000 {
                content.push_str(&row.replace("{i}", &i.to_string()));
            }
            let path = file(&dir, name, content.as_bytes());
            let total = content.len() as u64;
            let mut calls = Vec::new();
            crm()
                .import(&path, ImportOptions::default(), &mut |read, of| {
                    calls.push((read, of))
                })
                .unwrap();
            assert_eq!(calls.first(), Some(&(0, total)), "{name}");
            assert_eq!(calls.last(), Some(&(total, total)), "{name}");
            assert!(
                calls.len() > 10 && calls.len() <= 103,
                "{name}: {} calls",
                calls.len()
            );
            assert!(
                calls.windows(2).all(|w| w[0].0 <= w[1].0),
                "{name}: monotonic"
            );
            assert!(calls.iter().all(|&(read, of)| of == total && read <= total));
        }
    }

    #[test]
    fn a_hundred_thousand_rows_import_quickly_with_every_bad_row_counted() {
        const ROWS: u64 = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
        writeln!(out, "email,name,region,tier,policyNumber").unwrap();
        let mut bad = 0u64;
        for i in 0..ROWS {
            match i % 100 {
                // ~1% bad: alternately a bad email and a missing cell.
                37 if i % 200 == 37 => writeln!(out, "user{i}.example.com,U {i},EMEA,gold,P{i}"),
                37 => writeln!(out, "user{i}@example.com,U {i},EMEA,gold"),
                _ => writeln!(
                    out,
                    "user{i}@corp{}.example.com,U {i},EMEA,gold,P{i}",
                    i % 50
                ),
            }
            .unwrap();
            bad += u64::from(i % 100 == 37);
        }
        out.flush().unwrap();
        drop(out);

        let crm = crm();
        let started = std::time::Instant::now();
        let report = import(&crm, &path, false);
        let took = started.elapsed();
        println!(
            "imported {ROWS} CSV rows ({} bad) in {took:?}",
            report.bad_rows
        );
        assert_eq!(report.bad_rows, bad);
        assert_eq!(report.imported, ROWS - bad);
        assert_eq!(report.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(
            report.errors[0],
            err(39, "invalid email \"user37.example.com\"")
        );
        assert_eq!(report.errors[1], err(139, "expected 5 cells, found 4"));
        assert_eq!(crm.len() as u64, ROWS - bad);
        assert_eq!(
            crm.by_domain("corp7.example.com").unwrap(),
            Some(rec(&[("region", "EMEA"), ("tier", "gold")]))
        );

        let started = std::time::Instant::now();
        let again = import(&crm, &path, false);
        println!("re-imported in {:?}", started.elapsed());
        assert_eq!(again, report);
        assert_eq!(crm.len() as u64, ROWS - bad);
    }

    #[test]
    fn re_import_is_idempotent_and_a_changed_row_replaces_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "crm.csv",
            b"email,region\na@x.com,EMEA\nb@x.com,EMEA\nc@y.com,NA\n",
        );
        let crm = crm();
        let first = import(&crm, &path, false);
        let second = import(&crm, &path, false);
        assert_eq!(first, second);
        assert_eq!(crm.len(), 3);
        assert_eq!(
            crm.by_domain("x.com").unwrap(),
            Some(rec(&[("region", "EMEA")]))
        );

        std::fs::write(&path, b"email,region\nB@x.com,APAC\n").unwrap();
        assert_eq!(import(&crm, &path, false).imported, 1);
        assert_eq!(crm.len(), 3, "rows absent from the file are kept");
        assert_eq!(
            crm.by_email("b@x.com").unwrap(),
            Some(rec(&[("region", "APAC")]))
        );
        assert_eq!(crm.by_domain("x.com").unwrap(), None);
    }

    #[test]
    fn the_later_of_two_rows_for_one_email_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "crm.jsonl",
            b"{\"email\":\"a@x.com\",\"tier\":\"silver\"}\n{\"email\":\"A@X.COM\",\"tier\":\"gold\"}\n",
        );
        let crm = crm();
        assert_eq!(import(&crm, &path, false).imported, 2);
        assert_eq!(crm.len(), 1);
        assert_eq!(
            crm.by_email("a@x.com").unwrap(),
            Some(rec(&[("tier", "gold")]))
        );
    }

    #[test]
    fn unusable_files_are_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let crm = crm();
        let refused = |name: &str, content: &[u8]| {
            let path = file(&dir, name, content);
            crm.import(&path, ImportOptions::default(), &mut |_, _| {})
                .unwrap_err()
                .to_string()
        };
        let cases: [(&str, &[u8], &str); 6] = [
            (
                "crm.txt",
                b"email\na@x.com\n",
                "must end in .csv, .jsonl, .ndjson or .json",
            ),
            ("empty.csv", b"", "the CSV file is empty"),
            (
                "noemail.csv",
                b"mail,tier\n",
                "no \"email\" column (found: mail, tier)",
            ),
            (
                "twice.csv",
                b"email,Email\n",
                "more than one \"email\" column",
            ),
            (
                "dup.csv",
                b"email,tier, tier\n",
                "names column \"tier\" twice",
            ),
            ("blank.csv", b"email,tier,\n", "header cell 3 is blank"),
        ];
        for (name, content, expected) in cases {
            let message = refused(name, content);
            assert!(message.contains(name), "{message}");
            assert!(message.contains(expected), "{message}");
        }
        let missing = dir.path().join("missing.csv");
        let message = crm
            .import(&missing, ImportOptions::default(), &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("cannot read CRM import file"),
            "{message}"
        );
        assert!(message.contains("missing.csv"), "{message}");
        assert!(crm.is_empty());
    }
}
