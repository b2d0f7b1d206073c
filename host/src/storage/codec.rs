//! The stored form of an answer ([`StoredDelivery`]), the same on every
//! backend: a fixed header that can be read without decoding anything, then
//! the body and the record, compressed with zstd and a dictionary compiled
//! into the binary, the record's actions stored once.
//!
//! Route and id are not in the value: every backend keys the value by them
//! and passes them to [`decode`].
//!
//! # Format v1, byte by byte
//!
//! | bytes | what |
//! |---|---|
//! | 0 | [`VERSION_1`] (`0x01`) |
//! | 1..9 | `stored_at_ms`, u64 big-endian ([`stored_at_ms`] reads only this) |
//! | 9..11 | `status`, u16 big-endian |
//! | 11 | payload encoding: `0` raw, `1` zstd with [`DICTIONARY_V1`] |
//! | 12.. | the payload, raw or as one zstd frame (with its content size) |
//!
//! The payload, once decompressed:
//!
//! | bytes | what |
//! |---|---|
//! | varint `n` | byte length of `body` |
//! | `n` bytes | `body`, exactly as answered (UTF-8) |
//! | varint `r` | number of action references |
//! | `r` × (varint `plugin`, varint `count`) | `record.plugins[plugin].actions` is the next `count` actions of the envelope |
//! | the rest | `record` as compact JSON, each referenced `actions` written as `[]` |
//!
//! Varints are LEB128 (7 bits a byte, low bits first, at most 10 bytes).
//!
//! # No duplicated actions
//!
//! The chain appends each plugin's valid actions to the envelope in order,
//! so for an answer with actions the record repeats every action of the
//! body. [`encode`] walks the record's plugins and, when a plugin's
//! `actions` equal the next slice of the body's `actions` (as JSON values),
//! stores a reference instead; [`decode`] puts the slice back. Anything
//! else (a body that is no envelope, a 4xx, a record cut down by its bound,
//! actions that differ) is stored as it is: `decode(encode(x)) == x` for
//! every answer, and the body byte for byte.
//!
//! # Older values
//!
//! Before v1 a value was the JSON of [`StoredDelivery`], whose first byte
//! is `{`: [`decode`] still reads it (and [`stored_at_ms`] its stamp), so
//! answers stored before an upgrade are replayed after it. They are never
//! written again and leave the store when they expire.
//!
//! # Hostile bytes
//!
//! A shared Redis or a damaged disk can hand back anything. Decoding never
//! panics and never allocates more than the value's own length or
//! [`MAX_ZSTD_PAYLOAD_BYTES`]: a zstd frame must declare its size, and one
//! declaring more is refused before any allocation.

use std::sync::{LazyLock, Mutex, PoisonError};

use serde_json::Value;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::StoredDelivery;

/// First byte of a format-v1 value.
pub const VERSION_1: u8 = 0x01;

/// First byte of a value stored before v1 (the JSON of a [`StoredDelivery`]).
const LEGACY_JSON: u8 = b'{';

/// Header bytes before the payload: version, stamp, status, encoding.
const HEADER_LEN: usize = 12;

/// Payload encodings (byte 11).
const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// The raw-content dictionary of format v1: compact JSON of typical
/// envelopes and records (field names, action types, outcomes, failure
/// kinds), the most typical last (zstd finds recent content cheapest).
///
/// **Part of format v1 forever**: every value compressed with it needs
/// these exact bytes to decompress. Changing one byte means a new version
/// byte (and keeping this file to read v1). A test pins its hash.
pub const DICTIONARY_V1: &[u8] = include_bytes!("codec-v1.dict");

/// zstd level. Measured on the example chain's answer (1 278 payload bytes;
/// zstd 1.5 CLI benchmark, release): level 3 gives 365 bytes at 150 MB/s,
/// 5 gives 325 at 66 MB/s (about 20 µs an answer), 6 to 12 no better,
/// 19 gives 318 at 5.5 MB/s. An answer is written once and a delivery
/// takes milliseconds: 5 buys 11 % less disk and Redis memory for
/// microseconds. Decompression runs at about 250 MB/s whatever the level.
const LEVEL: i32 = 5;

/// Most payload bytes compressed; a larger payload is stored raw (nothing
/// is lost, it is only not compressed), so a zstd frame declaring more is
/// corrupt, and decoding refuses it before allocating.
///
/// The payload is a record, at most `emailgistics::record::MAX_RECORD_BYTES`
/// (64 KiB; a test in `host/tests/properties.rs` checks it stays below this),
/// and a body, whose envelope holds at most the chain's actions: each
/// plugin's at most its `max_output_bytes` (1 MiB by default). 8 MiB keeps
/// the answers of chains of up to seven plugins at the default limit
/// compressed; a hostile value costs at most one 8 MiB allocation.
pub const MAX_ZSTD_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// Contexts kept for reuse per direction: enough that encoders and
/// decoders running at once rarely allocate one (an encoding context is
/// ~55 KiB here, a decoding one ~160 KiB); more would only hold memory
/// after a burst. The prepared dictionaries (~150 KiB) exist once.
const POOLED_CONTEXTS: usize = 4;

static ENCODER_DICT: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARY_V1, LEVEL));
static DECODER_DICT: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY_V1));
static COMPRESSORS: Pool<Compressor<'static>> = Pool::new();
static DECOMPRESSORS: Pool<Decompressor<'static>> = Pool::new();

/// Why a stored value cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// The first byte names no known format.
    #[error("unknown format byte {0:#04x}")]
    UnknownFormat(u8),
    /// A legacy (JSON) value that is not a stored answer.
    #[error("legacy JSON value: {0}")]
    Legacy(serde_json::Error),
    /// The zstd frame is damaged.
    #[error("compressed payload: {0}")]
    Compressed(String),
    /// The zstd frame declares more than [`MAX_ZSTD_PAYLOAD_BYTES`].
    #[error("compressed payload declares {0} bytes, at most {MAX_ZSTD_PAYLOAD_BYTES} allowed")]
    TooLarge(u64),
    /// The header or payload does not follow the format.
    #[error("malformed value: {0}")]
    Malformed(&'static str),
    /// The record is not JSON.
    #[error("record: {0}")]
    Record(serde_json::Error),
}

/// The stored form of `answer` (format v1; its route and id are left out).
pub fn encode(answer: &StoredDelivery) -> Vec<u8> {
    let payload = payload(answer);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(VERSION_1);
    out.extend_from_slice(&answer.stored_at_ms.to_be_bytes());
    out.extend_from_slice(&answer.status.to_be_bytes());
    match compress(&payload) {
        Some(frame) if frame.len() < payload.len() => {
            out.push(ZSTD);
            out.extend_from_slice(&frame);
        }
        // Too large, or too small for compression to pay.
        _ => {
            out.push(RAW);
            out.extend_from_slice(&payload);
        }
    }
    out
}

/// The answer stored as `value` under (`route`, `id`): format v1, or the
/// JSON of older versions.
pub fn decode(route: &str, id: &str, value: &[u8]) -> Result<StoredDelivery, CodecError> {
    match *value.first().ok_or(CodecError::Empty)? {
        LEGACY_JSON => serde_json::from_slice(value).map_err(CodecError::Legacy),
        VERSION_1 => decode_v1(route, id, value),
        other => Err(CodecError::UnknownFormat(other)),
    }
}

/// Just the stamp of a stored value: v1's header, without decompressing
/// (the sled sweep checks it on every removal); `None` if `value` is
/// neither v1 nor a legacy answer.
pub fn stored_at_ms(value: &[u8]) -> Option<u64> {
    match *value.first()? {
        VERSION_1 => Some(u64::from_be_bytes(*value.get(1..9)?.first_chunk()?)),
        LEGACY_JSON => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Stamp {
                stored_at_ms: u64,
            }
            serde_json::from_slice::<Stamp>(value)
                .ok()
                .map(|s| s.stored_at_ms)
        }
        _ => None,
    }
}

/// Body, action references and record, uncompressed.
fn payload(answer: &StoredDelivery) -> Vec<u8> {
    let refs = shared_actions(&answer.body, &answer.record);
    // Serializing a `Value` into a Vec cannot fail (its keys are strings).
    let record_json = if refs.is_empty() {
        serde_json::to_vec(&answer.record)
    } else {
        let mut record = answer.record.clone();
        if let Some(plugins) = plugins_mut(&mut record) {
            for &(index, _) in &refs {
                if let Some(Value::Array(actions)) = plugins[index].get_mut("actions") {
                    actions.clear();
                }
            }
        }
        serde_json::to_vec(&record)
    }
    .unwrap_or_default();
    let mut out = Vec::with_capacity(answer.body.len() + record_json.len() + 16);
    put_varint(&mut out, answer.body.len() as u64);
    out.extend_from_slice(answer.body.as_bytes());
    put_varint(&mut out, refs.len() as u64);
    for (plugin, count) in refs {
        put_varint(&mut out, plugin as u64);
        put_varint(&mut out, count as u64);
    }
    out.extend_from_slice(&record_json);
    out
}

/// The `actions` array of `body` if it is an envelope (a JSON object).
fn envelope_actions(body: &str) -> Option<Vec<Value>> {
    match serde_json::from_str::<Value>(body).ok()? {
        Value::Object(mut top) => match top.remove("actions")? {
            Value::Array(actions) => Some(actions),
            _ => None,
        },
        _ => None,
    }
}

/// The plugin entries of a record, if it has a `plugins` array.
fn plugins_mut(record: &mut Value) -> Option<&mut Vec<Value>> {
    record.get_mut("plugins")?.as_array_mut()
}

/// (plugin index, count) of each plugin whose `actions` equal the next
/// slice of the body's envelope actions: what [`payload`] stores as
/// references.
fn shared_actions(body: &str, record: &Value) -> Vec<(usize, usize)> {
    let mut refs = Vec::new();
    let Some(plugins) = record.get("plugins").and_then(Value::as_array) else {
        return refs;
    };
    fn actions_of(p: &Value) -> Option<&Vec<Value>> {
        p.get("actions")?.as_array()
    }
    // Most answers (4xx, no actions) have nothing to share: no body parse.
    if !plugins
        .iter()
        .any(|p| actions_of(p).is_some_and(|a| !a.is_empty()))
    {
        return refs;
    }
    let Some(envelope) = envelope_actions(body) else {
        return refs;
    };
    let mut next = 0;
    for (index, plugin) in plugins.iter().enumerate() {
        let Some(actions) = actions_of(plugin) else {
            continue;
        };
        let n = actions.len();
        if n > 0 && envelope.get(next..next + n) == Some(actions.as_slice()) {
            refs.push((index, n));
            next += n;
        }
    }
    refs
}

fn decode_v1(route: &str, id: &str, value: &[u8]) -> Result<StoredDelivery, CodecError> {
    let header = value
        .get(..HEADER_LEN)
        .ok_or(CodecError::Malformed("header cut short"))?;
    let stamp = u64::from_be_bytes(header[1..9].try_into().unwrap_or_default());
    let status = u16::from_be_bytes([header[9], header[10]]);
    let rest = &value[HEADER_LEN..];
    let decompressed;
    let payload = match header[11] {
        RAW => rest,
        ZSTD => {
            decompressed = decompress(rest)?;
            decompressed.as_slice()
        }
        _ => return Err(CodecError::Malformed("unknown payload encoding")),
    };
    let mut reader = Reader(payload);
    let body_len = reader.len()?;
    let body = std::str::from_utf8(reader.take(body_len)?)
        .map_err(|_| CodecError::Malformed("body is not UTF-8"))?
        .to_owned();
    let ref_count = reader.len()?;
    // Each reference takes at least two bytes: this bounds the Vec by the
    // value's own length.
    if ref_count > reader.0.len() / 2 {
        return Err(CodecError::Malformed("more references than bytes"));
    }
    let refs = (0..ref_count)
        .map(|_| Ok((reader.len()?, reader.len()?)))
        .collect::<Result<Vec<_>, CodecError>>()?;
    let mut record: Value = serde_json::from_slice(reader.0).map_err(CodecError::Record)?;
    if !refs.is_empty() {
        restore_envelope_actions(&body, &mut record, &refs)?;
    }
    Ok(StoredDelivery {
        route: route.to_owned(),
        id: id.to_owned(),
        stored_at_ms: stamp,
        status,
        body,
        record,
    })
}

/// Put back the actions [`shared_actions`] left out.
fn restore_envelope_actions(
    body: &str,
    record: &mut Value,
    refs: &[(usize, usize)],
) -> Result<(), CodecError> {
    let envelope = envelope_actions(body).ok_or(CodecError::Malformed(
        "action references without an envelope",
    ))?;
    let plugins =
        plugins_mut(record).ok_or(CodecError::Malformed("action references without plugins"))?;
    let mut next = 0usize;
    for &(index, count) in refs {
        let end = next
            .checked_add(count)
            .filter(|&end| end <= envelope.len())
            .ok_or(CodecError::Malformed("action reference past the envelope"))?;
        match plugins.get_mut(index).and_then(|p| p.get_mut("actions")) {
            Some(Value::Array(slot)) if slot.is_empty() && count > 0 => {
                slot.extend_from_slice(&envelope[next..end]);
            }
            _ => {
                return Err(CodecError::Malformed(
                    "action reference to no empty actions",
                ))
            }
        }
        next = end;
    }
    Ok(())
}

/// One zstd frame of `payload`, or `None` if it is over the bound (or zstd
/// failed, which it does not for in-memory buffers: then stored raw).
fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() > MAX_ZSTD_PAYLOAD_BYTES {
        return None;
    }
    COMPRESSORS
        .with(
            || Compressor::with_prepared_dictionary(&ENCODER_DICT),
            |c| c.compress(payload),
        )
        .and_then(|r| r)
        .ok()
}

/// The payload of one zstd frame, refusing a frame that does not declare
/// its size or declares more than [`MAX_ZSTD_PAYLOAD_BYTES`] before
/// allocating anything.
fn decompress(frame: &[u8]) -> Result<Vec<u8>, CodecError> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .map_err(|_| CodecError::Compressed("bad frame header".into()))?
        .ok_or(CodecError::Compressed(
            "frame without a content size".into(),
        ))?;
    if declared > MAX_ZSTD_PAYLOAD_BYTES as u64 {
        return Err(CodecError::TooLarge(declared));
    }
    let mut out = Vec::with_capacity(declared as usize);
    // A frame holding more than it declared fails here: the buffer is full.
    let written = DECOMPRESSORS
        .with(
            || Decompressor::with_prepared_dictionary(&DECODER_DICT),
            |d| d.decompress_to_buffer(frame, &mut out),
        )
        .and_then(|r| r)
        .map_err(|e| CodecError::Compressed(e.to_string()))?;
    if written as u64 != declared {
        return Err(CodecError::Compressed("frame shorter than declared".into()));
    }
    Ok(out)
}

/// zstd contexts for reuse, at most [`POOLED_CONTEXTS`] idle.
struct Pool<T> {
    idle: Mutex<Vec<T>>,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Run `f` with an idle context, or a new one from `make`.
    fn with<R>(
        &self,
        make: impl FnOnce() -> std::io::Result<T>,
        f: impl FnOnce(&mut T) -> R,
    ) -> std::io::Result<R> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut ctx = match idle {
            Some(ctx) => ctx,
            None => make()?,
        };
        let out = f(&mut ctx);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < POOLED_CONTEXTS {
            idle.push(ctx);
        }
        Ok(out)
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A cursor over the payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut n = 0u64;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                break; // more than 64 bits
            }
            n |= bits << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(n);
            }
        }
        Err(CodecError::Malformed("bad varint"))
    }

    /// A varint that is a length or index (fits in usize).
    fn len(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.varint()?).map_err(|_| CodecError::Malformed("length too large"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.0.len() {
            return Err(CodecError::Malformed("length past the end"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
}

#[cfg(test)]
mod tests;
