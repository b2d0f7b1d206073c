//! `enrichd crm import FILE`: load customer records into an embedded CRM
//! source, with a progress bar on large files and every bad row reported
//! with its line number.

use anyhow::{bail, Context};

use crate::config::CrmBackendSpec;
use crate::crm::embedded::{EmbeddedCrm, ImportOptions};
use crate::storage::crm_records::CrmDb;

/// Files smaller than this import in a blink: no progress bar.
const PROGRESS_FROM_BYTES: u64 = 1024 * 1024;

pub(super) fn import(
    target: &super::Target,
    file: &std::path::Path,
    source: Option<&str>,
    strict: bool,
) -> anyhow::Result<()> {
    let config = super::load(target)?;
    let spec = match source {
        Some(name) => config
            .crm
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("no CRM source named {name:?} in the config"))?,
        None => config
            .crm
            .iter()
            .find(|c| matches!(c.backend, CrmBackendSpec::Embedded { .. }))
            .context("the config has no embedded CRM source ([[crm]] with kind = \"embedded\")")?,
    };
    if !matches!(spec.backend, CrmBackendSpec::Embedded { .. }) {
        bail!(
            "CRM source {:?} is not embedded: only embedded sources are imported into",
            spec.name
        );
    }
    let db = CrmDb::open_default(&config.data_dir)
        .context("stop enrichd serve on this data directory first, or use a seed file")?;
    let crm = EmbeddedCrm::open(&db, &spec.name)?;

    let total = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let bar = (total >= PROGRESS_FROM_BYTES).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta} left")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let report = crm.import(file, ImportOptions { strict }, &mut |done, _| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    db.flush()?;

    for e in &report.errors {
        eprintln!("{}: {e}", file.display());
    }
    let unlisted = report.bad_rows.saturating_sub(report.errors.len() as u64);
    if unlisted > 0 {
        eprintln!("{}: … and {unlisted} more bad rows", file.display());
    }
    println!(
        "{} records imported into CRM source {:?} ({} in total), {} bad rows{}",
        report.imported,
        spec.name,
        crm.len(),
        report.bad_rows,
        if strict && report.bad_rows > 0 {
            " (strict: nothing imported)"
        } else {
            ""
        }
    );
    if report.bad_rows > 0 {
        bail!("{} rows could not be imported", report.bad_rows);
    }
    Ok(())
}
