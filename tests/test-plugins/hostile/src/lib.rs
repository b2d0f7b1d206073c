//! # hostile (test plugin)
//!
//! A deliberately misbehaving plugin. It exists **only** for the host's
//! sandbox tests: each behaviour below attacks one of the host's limits
//! (time, memory, stack, output size, stdio, WASI capabilities, import
//! grants), so the tests can check that the host contains it. Never deploy it.
//!
//! The behaviour is chosen by the plugin config (so the `config` capability
//! must be granted), which lets the tests run each behaviour under its own
//! plugin name and limits. Key `mode` is required; a missing or unknown mode
//! returns `internal("hostile: unknown mode ...")`.
//!
//! Modes, their config keys (all integers) and results:
//!
//! - `loop`: busy-loops forever without calling the host. Keys: none.
//! - `spin`: busy-loops until `ms` (required) milliseconds of wall-clock time
//!   have passed, then returns `set-custom-fields` "spin" `{spun_ms: <ms>}`.
//! - `alloc`: fills a buffer of `bytes` bytes with non-zero data, then returns
//!   `set-custom-fields` "alloc" `{allocated: <bytes>}`. Without `bytes` it
//!   allocates 16 MiB chunks and keeps them forever; the failed allocation
//!   aborts the guest (a trap).
//! - `recurse`: recurses `depth` frames of at least 256 bytes of stack each
//!   (forever without `depth`), then returns `set-custom-fields` "recurse"
//!   `{depth: <depth>}`.
//! - `flood`: returns `count` (default 100000) `tag` actions "flood <i>" with
//!   tags `[T<i>]`, i from 0; with `value_len`, instead `count`
//!   `set-custom-fields` actions "flood <i>" with `{k: <value_len x's>}`.
//! - `escape`: tries to read `/etc/passwd`, list `/`, read `PATH`, the
//!   environment and the arguments, connect to `127.0.0.1:<port>` (`port`,
//!   default 80) and write `/tmp/enrichd-escape`; returns `set-custom-fields`
//!   "escape" with one key per attempt (below), never an error.
//! - `ungranted`: calls `crm::lookup-email`; `denied(msg)` returns
//!   `dependency("crm denied: <msg>")`, success `tag` "ungranted" `[CRM-OK]`.
//! - `print`: prints `lines` (default 100000) lines of 100 characters to
//!   stdout and to stderr, then returns `tag` "print" `[printed]`.
//! - `kv-probe`: calls, in order, `kv::set("probe", "1")`, `kv::get("probe")`,
//!   `kv::get-from(<ns>, "probe")` (`ns` is a string key, default
//!   `engagement-tracker`), `kv::set("big", <70 KiB of x>)` and
//!   `kv::set(<300 k's>, "x")`; returns `set-custom-fields` "kv" with keys
//!   `set`, `get`, `getFrom`, `bigValue`, `longKey`, each `ok:<value>` (empty
//!   for `set` and for a missing key), `denied`, `unavailable` or `invalid`
//!   (the `host-error` case).
//!
//!
//! Modes aimed at what a plugin makes the *host* spend (issue 9):
//!
//! - `fields`: one `set-custom-fields` "fields" with `count` (default 90000)
//!   distinct keys `k<i>`, each padded with `_` to `key_len` characters when
//!   that is larger, and value `v`.
//! - `tags`: one `tag` "tags" with `count` (default 90000) distinct tags `t<i>`.
//! - `message`: no actions, a message of `bytes` (default 20 MiB) `m`s.
//! - `guest-error`: fails with `internal(<bytes x's>)` (`bytes` default 20 MiB).
//! - `log`: calls `log::log(info, ...)` `lines` times (default 1000), or for
//!   `ms` milliseconds when `ms` is set; each line is `text` (default
//!   `line <i>`). Returns `set-custom-fields` "log" `{logged: <ok calls>,
//!   refused: <failed calls>, error: <first host-error, or empty>}`.
//! - `kv-fill`: sets unique keys `fill-<i>` to values of `value_len` (default
//!   65536) bytes, `count` times (default: until `ms` milliseconds passed,
//!   default 5000), stopping at the first error. Returns `set-custom-fields`
//!   "kv-fill" `{written: <n>, error: <host-error case: message, or empty>}`.
//! - `crm-flood`: looks up `count` (default 200000) distinct addresses
//!   `u<i>@d<i>.example` through `crm::lookup-email`, going on after errors.
//!   Returns `set-custom-fields` "crm-flood" `{ok: <n>, failed: <n>, error:
//!   <first host-error, or empty>}`.
//! - `sick`: fails with `internal("hostile: sick")` unless its own kv key
//!   `healed` is set (to anything); then returns `tag` "sick" `[healed]`. A
//!   test heals it by writing the key through the host's kv store.
//!
//! Mode for the fresh-instance guarantee (issue 11):
//!
//! - `remember`: looks for what an earlier call of this plugin left in its
//!   memory, then leaves its own marks for the next call: a static with a
//!   non-zero initial value (in the memory image's data), a zero-initialised
//!   static, and a zeroed heap buffer of `bytes` (default 4 MiB: above the
//!   allocator's threshold, so it comes from `memory.grow`, whose pages the
//!   allocator trusts to be zero; and above the 1 MiB the host resets in
//!   place, so both of its reset paths are crossed). Returns
//!   `set-custom-fields` "remember" `{data, bss, heap}`: `pristine`, `zero`
//!   and `zero` in a fresh instance, else `seen` or `<n> non-zero bytes`.
//!
//! Modes for the multi-host tests (issue 10):
//!
//! - `count`: records this run in its own kv namespace as the key
//!   `run-<16 random hex digits>` (value `started`) *before* doing anything
//!   else, logs `count: <key>` (info; when `log` is granted, errors
//!   ignored), then busy-waits `ms` (default 0) milliseconds and returns
//!   `set-custom-fields` "count" `{run: <key>}`. The number of keys in the
//!   namespace is the number of runs that started, on every host sharing
//!   the kv, killed ones included; the log line tells which host runs it.
//!
//! ## Events
//!
//! The plugin targets `enrichd-plugin`, so it also exports `events`:
//! `handle-event` reads the same `mode` and runs `loop`, `spin`, `alloc`,
//! `recurse`, `print` and `kv-probe` just like `handle` (the same config keys,
//! the same traps), then returns `Ok(())`, dropping the actions. `flood`,
//! `escape` and `ungranted` only make sense for deliveries: events return
//! `Ok(())` at once. Unknown or missing modes fail as for deliveries.
//!
//! Integers are non-negative decimals (so `-1` is "not an integer"); an unparsable one returns
//! `internal("hostile: config `<key>` is not an integer")`, one too large for
//! its use `internal("hostile: config `<key>` is out of range")`.
//!
//! The `escape` keys, in order, are `file` (`ok:<n> bytes`), `dir`
//! (`ok:<n> entries`), `env` (`ok:<n> bytes`, or `unset` when `PATH` is
//! absent), `vars` and `args` (the counts, e.g. `0`), `socket`
//! (`ok:connected to <addr>`) and `write` (`ok:written`); a failed attempt is
//! `err:<io error>`, e.g. `err:No such file or directory (os error 44)`.
//! An `ok:` anywhere but `vars`/`args` means the sandbox leaked.
//!
//! The output message is the mode name.

wit_bindgen::generate!({
    world: "enrichd-plugin",
    path: "../../../wit",
});

use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use enrichd::plugin::log::Level;
use enrichd::plugin::types::{
    Action, ActionValue, Delivery, HostError, PluginError, PluginOutput, TagAction,
};
use enrichd::plugin::{config, crm, kv, log};
use exports::enrichd::plugin::events::{EngagelabEvent, Guest as EventsGuest};
use exports::enrichd::plugin::handler::Guest as HandlerGuest;

/// Size of one allocation of the `alloc` memory bomb.
const BOMB_CHUNK: usize = 16 << 20;

/// Bytes of stack each `recurse` frame keeps alive across its recursive call.
const FRAME_BYTES: usize = 256;

/// Characters per line printed by `print`.
const LINE_CHARS: usize = 100;

/// Default namespace read by `kv-probe`'s `get-from`.
const DEFAULT_PROBE_NS: &str = "engagement-tracker";

/// Size of the value `kv-probe` sets to hit the host's 64 KiB limit.
const BIG_VALUE_BYTES: usize = 70 * 1024;

/// Length of the key `kv-probe` sets to hit the host's 256-byte limit.
const LONG_KEY_CHARS: usize = 300;

/// Default size of the `message` and `guest-error` texts: 20 MiB.
const BIG_TEXT_BYTES: usize = 20 << 20;

/// Default count of `fields` keys and `tags` tags: fits the host's 1 MiB
/// output limit, so only the per-action caps stop it.
const MANY: usize = 90_000;

/// Default size of `remember`'s heap buffer.
const REMEMBER_HEAP_BYTES: usize = 4 << 20;

/// `remember`'s marks. Atomics rather than `static mut`: no unsafe, and the
/// loads and stores cannot be optimised away. `DATA_MARK` starts non-zero,
/// so it lives in the memory image's data segment; `BSS_MARK` starts zero.
static DATA_MARK: AtomicU64 = AtomicU64::new(PRISTINE);
static BSS_MARK: AtomicU64 = AtomicU64::new(0);
/// `DATA_MARK`'s initial value, and what a call leaves in both marks.
const PRISTINE: u64 = u64::from_le_bytes(*b"pristine");
const LEFT_BEHIND: u64 = u64::from_le_bytes(*b"was here");

/// The plugin; exported as both the `handler` and the `events` interface.
struct Hostile;

/// Which export is running: some modes only make sense for deliveries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Delivery,
    Event,
}

/// Runs the configured mode; returns the mode and the actions.
fn run(call: Call) -> Result<(Option<String>, Vec<Action>), PluginError> {
    let mode = config_str("mode")?;
    let actions = match mode.as_deref() {
        Some("loop") => busy_loop_forever(),
        Some("spin") => spin()?,
        Some("alloc") => alloc()?,
        Some("recurse") => recurse()?,
        Some("print") => print()?,
        Some("kv-probe") => kv_probe()?,
        Some("log") => log_loop()?,
        Some("kv-fill") => kv_fill()?,
        Some("crm-flood") => crm_flood()?,
        Some("sick") => sick()?,
        Some("count") => count()?,
        Some("remember") => remember()?,
        Some("guest-error") => {
            let bytes: usize = config_int("bytes")?.unwrap_or(BIG_TEXT_BYTES);
            return Err(PluginError::Internal("x".repeat(bytes)));
        }
        // Output attacks are about deliveries.
        Some("fields" | "tags" | "message") if call == Call::Event => Vec::new(),
        Some("fields") => many_fields()?,
        Some("tags") => many_tags()?,
        Some("message") => {
            let bytes: usize = config_int("bytes")?.unwrap_or(BIG_TEXT_BYTES);
            return Ok((Some("m".repeat(bytes)), Vec::new()));
        }
        // Output-size, sandbox and grant attacks are about deliveries.
        Some("flood" | "escape" | "ungranted") if call == Call::Event => Vec::new(),
        Some("flood") => flood()?,
        Some("escape") => escape()?,
        Some("ungranted") => ungranted()?,
        Some(other) => {
            return Err(PluginError::Internal(format!(
                "hostile: unknown mode `{other}`"
            )))
        }
        None => {
            return Err(PluginError::Internal(
                "hostile: unknown mode (config `mode` is not set)".to_string(),
            ))
        }
    };
    Ok((mode, actions))
}

impl HandlerGuest for Hostile {
    fn handle(_delivery: Delivery) -> Result<PluginOutput, PluginError> {
        let (mode, actions) = run(Call::Delivery)?;
        Ok(PluginOutput {
            actions,
            message: mode,
        })
    }
}

impl EventsGuest for Hostile {
    fn handle_event(_event: EngagelabEvent) -> Result<(), PluginError> {
        run(Call::Event).map(|_| ())
    }
}

export!(Hostile);

// --- config -----------------------------------------------------------------

/// The name of a `host-error` case and its message.
fn describe(e: &HostError) -> String {
    match e {
        HostError::Denied(m) => format!("denied: {m}"),
        HostError::Unavailable(m) => format!("unavailable: {m}"),
        HostError::Invalid(m) => format!("invalid: {m}"),
        HostError::OverLimit(m) => format!("over-limit: {m}"),
    }
}

/// The value of config key `key`, if set.
fn config_str(key: &str) -> Result<Option<String>, PluginError> {
    config::get(key).map_err(|e| {
        PluginError::Dependency(format!(
            "hostile: cannot read config `{key}`: {}",
            describe(&e)
        ))
    })
}

/// Parse a config value as a non-negative integer of type `T`.
fn parse_int<T: TryFrom<u64>>(key: &str, value: &str) -> Result<T, PluginError> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| PluginError::Internal(format!("hostile: config `{key}` is not an integer")))?;
    T::try_from(n)
        .map_err(|_| PluginError::Internal(format!("hostile: config `{key}` is out of range")))
}

/// The integer value of config key `key`, if set.
fn config_int<T: TryFrom<u64>>(key: &str) -> Result<Option<T>, PluginError> {
    config_str(key)?.map(|v| parse_int(key, &v)).transpose()
}

// --- actions ----------------------------------------------------------------

/// One `set-custom-fields` action.
fn fields(name: &str, pairs: &[(&str, String)]) -> Action {
    Action {
        name: Some(name.to_string()),
        value: ActionValue::SetCustomFields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ),
    }
}

/// One `tag` action with a single tag.
fn tag(name: &str, tag: &str) -> Action {
    Action {
        name: Some(name.to_string()),
        value: ActionValue::Tag(TagAction {
            tags: vec![tag.to_string()],
        }),
    }
}

// --- modes ------------------------------------------------------------------

/// `loop`: never returns. `black_box` makes every iteration observable, so
/// the optimizer cannot delete the loop; it contains no calls, so only the
/// host's epoch checks on loop back-edges can stop it.
fn busy_loop_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// `spin`: busy-wait for `ms` milliseconds of wall-clock time.
fn spin() -> Result<Vec<Action>, PluginError> {
    let ms: u64 = config_int("ms")?.ok_or_else(|| {
        PluginError::Internal("hostile: mode `spin` needs config `ms`".to_string())
    })?;
    spin_for(ms);
    Ok(vec![fields("spin", &[("spun_ms", ms.to_string())])])
}

/// Busy-wait `ms` milliseconds of wall-clock time.
fn spin_for(ms: u64) {
    let deadline = Duration::from_millis(ms);
    let start = Instant::now();
    while start.elapsed() < deadline {
        std::hint::spin_loop();
    }
}

/// `alloc`: one buffer of `bytes` non-zero bytes, or the memory bomb.
fn alloc() -> Result<Vec<Action>, PluginError> {
    let Some(bytes) = config_int::<usize>("bytes")? else {
        memory_bomb();
    };
    // Non-zero fill: every page is written, not just reserved.
    let buffer = black_box(vec![1u8; bytes]);
    drop(buffer);
    Ok(vec![fields("alloc", &[("allocated", bytes.to_string())])])
}

/// `remember`: report what a previous call left, then leave marks.
fn remember() -> Result<Vec<Action>, PluginError> {
    let bytes: usize = config_int("bytes")?.unwrap_or(REMEMBER_HEAP_BYTES);
    let data = match DATA_MARK.swap(LEFT_BEHIND, Ordering::Relaxed) {
        PRISTINE => "pristine",
        _ => "seen",
    };
    let bss = match BSS_MARK.swap(LEFT_BEHIND, Ordering::Relaxed) {
        0 => "zero",
        _ => "seen",
    };
    // `black_box`: the compiler may not assume the zeroed buffer is zero,
    // the bytes are really read.
    let mut heap = black_box(vec![0u8; bytes]);
    let dirty = heap.iter().filter(|&&b| b != 0).count();
    heap.fill(0xa5);
    black_box(&heap);
    let heap = match dirty {
        0 => "zero".to_string(),
        n => format!("{n} non-zero bytes"),
    };
    Ok(vec![fields(
        "remember",
        &[
            ("data", data.to_string()),
            ("bss", bss.to_string()),
            ("heap", heap),
        ],
    )])
}

/// Allocate 16 MiB chunks of non-zero data and keep them all, forever. When
/// an allocation fails the guest aborts, which the host sees as a trap.
fn memory_bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; BOMB_CHUNK]);
        black_box(&mut hoard);
    }
}

/// `recurse`: `depth` nested calls, or unbounded recursion.
fn recurse() -> Result<Vec<Action>, PluginError> {
    let depth: Option<u64> = config_int("depth")?;
    black_box(descend(depth));
    let shown = depth.map_or_else(|| "unbounded".to_string(), |d| d.to_string());
    Ok(vec![fields("recurse", &[("depth", shown)])])
}

/// Recurse until `remaining` reaches 0 (never, when it is `None`).
///
/// Each frame keeps a `FRAME_BYTES` array that `black_box` may have changed
/// and that is read after the recursive call, and the result depends on the
/// callee's result, so the optimizer can turn this into neither a loop nor a
/// tail call: every level really costs stack.
#[inline(never)]
fn descend(remaining: Option<u64>) -> u64 {
    if remaining == Some(0) {
        return 0;
    }
    let mut frame = [0u8; FRAME_BYTES];
    black_box(&mut frame);
    let below = descend(remaining.map(|r| r - 1));
    below.wrapping_add(1 + u64::from(frame[below as usize % FRAME_BYTES]))
}

/// `flood`: `count` tag actions, or `count` set-custom-fields actions with
/// `value_len`-character values.
fn flood() -> Result<Vec<Action>, PluginError> {
    let count: usize = config_int("count")?.unwrap_or(100_000);
    let value_len: Option<usize> = config_int("value_len")?;
    let actions = match value_len {
        None => (0..count)
            .map(|i| tag(&format!("flood {i}"), &format!("T{i}")))
            .collect(),
        Some(len) => {
            let value = "x".repeat(len);
            (0..count)
                .map(|i| fields(&format!("flood {i}"), &[("k", value.clone())]))
                .collect()
        }
    };
    Ok(actions)
}

/// `ok:<detail>` or `err:<error>`.
fn report<T, E: std::fmt::Display>(
    result: Result<T, E>,
    detail: impl FnOnce(T) -> String,
) -> String {
    match result {
        Ok(v) => format!("ok:{}", detail(v)),
        Err(e) => format!("err:{e}"),
    }
}

/// `escape`: try what the sandbox should forbid and report each outcome.
fn escape() -> Result<Vec<Action>, PluginError> {
    let port: u16 = config_int("port")?.unwrap_or(80);

    let file = report(std::fs::read_to_string("/etc/passwd"), |s| {
        format!("{} bytes", s.len())
    });
    let dir = report(std::fs::read_dir("/"), |entries| {
        format!("{} entries", entries.count())
    });
    let env = match std::env::var("PATH") {
        Ok(v) => format!("ok:{} bytes", v.len()),
        Err(std::env::VarError::NotPresent) => "unset".to_string(),
        Err(e) => format!("err:{e}"),
    };
    let vars = std::env::vars().count().to_string();
    let args = std::env::args().count().to_string();
    let socket = report(std::net::TcpStream::connect(("127.0.0.1", port)), |s| {
        s.peer_addr()
            .map_or_else(|_| "connected".to_string(), |a| format!("connected to {a}"))
    });
    let write = report(std::fs::write("/tmp/enrichd-escape", "x"), |()| {
        "written".to_string()
    });

    Ok(vec![fields(
        "escape",
        &[
            ("file", file),
            ("dir", dir),
            ("env", env),
            ("vars", vars),
            ("args", args),
            ("socket", socket),
            ("write", write),
        ],
    )])
}

/// `ungranted`: call the CRM, which the tests do not grant.
fn ungranted() -> Result<Vec<Action>, PluginError> {
    match crm::lookup_email("rstorrie@pinnilly.com") {
        Ok(_) => Ok(vec![tag("ungranted", "CRM-OK")]),
        Err(HostError::Denied(msg)) => Err(PluginError::Dependency(format!("crm denied: {msg}"))),
        Err(e) => Err(PluginError::Dependency(format!("crm {}", describe(&e)))),
    }
}

/// `print`: `lines` lines of `LINE_CHARS` characters on stdout and stderr.
fn print() -> Result<Vec<Action>, PluginError> {
    let lines: u64 = config_int("lines")?.unwrap_or(100_000);
    for i in 0..lines {
        let line = format!("{i:0>width$}", width = LINE_CHARS);
        println!("{line}");
        eprintln!("{line}");
    }
    Ok(vec![tag("print", "printed")])
}

/// `ok:<value>` (empty for none), or the name of the `host-error` case.
fn kv_outcome(result: Result<Option<String>, HostError>) -> String {
    match result {
        Ok(value) => format!("ok:{}", value.unwrap_or_default()),
        Err(HostError::Denied(_)) => "denied".to_string(),
        Err(HostError::Unavailable(_)) => "unavailable".to_string(),
        Err(HostError::Invalid(_)) => "invalid".to_string(),
        Err(HostError::OverLimit(_)) => "over-limit".to_string(),
    }
}

/// `kv-probe`: one call of each kv operation, plus the two size limits.
fn kv_probe() -> Result<Vec<Action>, PluginError> {
    let ns = config_str("ns")?.unwrap_or_else(|| DEFAULT_PROBE_NS.to_string());
    let set = kv_outcome(kv::set("probe", "1").map(|()| None));
    let get = kv_outcome(kv::get("probe"));
    let get_from = kv_outcome(kv::get_from(&ns, "probe"));
    let big_value = kv_outcome(kv::set("big", &"x".repeat(BIG_VALUE_BYTES)).map(|()| None));
    let long_key = kv_outcome(kv::set(&"k".repeat(LONG_KEY_CHARS), "x").map(|()| None));
    Ok(vec![fields(
        "kv",
        &[
            ("set", set),
            ("get", get),
            ("getFrom", get_from),
            ("bigValue", big_value),
            ("longKey", long_key),
        ],
    )])
}

/// `fields`: one set-custom-fields action with many distinct keys.
fn many_fields() -> Result<Vec<Action>, PluginError> {
    let count: usize = config_int("count")?.unwrap_or(MANY);
    let key_len: usize = config_int("key_len")?.unwrap_or(0);
    let pairs = (0..count)
        .map(|i| (padded_key(i, key_len), "v".to_string()))
        .collect();
    Ok(vec![Action {
        name: Some("fields".to_string()),
        value: ActionValue::SetCustomFields(pairs),
    }])
}

/// `k<i>`, padded with `_` to `len` characters.
fn padded_key(i: usize, len: usize) -> String {
    let mut key = format!("k{i}");
    while key.len() < len {
        key.push('_');
    }
    key
}

/// `tags`: one tag action with many distinct tags.
fn many_tags() -> Result<Vec<Action>, PluginError> {
    let count: usize = config_int("count")?.unwrap_or(MANY);
    Ok(vec![Action {
        name: Some("tags".to_string()),
        value: ActionValue::Tag(TagAction {
            tags: (0..count).map(|i| format!("t{i}")).collect(),
        }),
    }])
}

/// `log`: log lines until the count or the time is reached.
fn log_loop() -> Result<Vec<Action>, PluginError> {
    let lines: u64 = config_int("lines")?.unwrap_or(1000);
    let ms: Option<u64> = config_int("ms")?;
    let text = config_str("text")?;
    let start = Instant::now();
    let (mut logged, mut refused, mut error) = (0u64, 0u64, String::new());
    let mut i = 0u64;
    loop {
        let done = match ms {
            Some(ms) => start.elapsed() >= Duration::from_millis(ms),
            None => i >= lines,
        };
        if done {
            break;
        }
        let line = text.clone().unwrap_or_else(|| format!("line {i}"));
        match log::log(Level::Info, &line) {
            Ok(()) => logged += 1,
            Err(e) => {
                refused += 1;
                if error.is_empty() {
                    error = describe(&e);
                }
            }
        }
        i += 1;
    }
    Ok(vec![fields(
        "log",
        &[
            ("logged", logged.to_string()),
            ("refused", refused.to_string()),
            ("error", error),
        ],
    )])
}

/// `kv-fill`: write unique keys until told to stop or refused.
fn kv_fill() -> Result<Vec<Action>, PluginError> {
    let value_len: usize = config_int("value_len")?.unwrap_or(64 * 1024);
    let count: Option<u64> = config_int("count")?;
    let ms: u64 = config_int("ms")?.unwrap_or(5000);
    let value = "x".repeat(value_len);
    let start = Instant::now();
    let (mut written, mut error) = (0u64, String::new());
    loop {
        let done = match count {
            Some(n) => written >= n,
            None => start.elapsed() >= Duration::from_millis(ms),
        };
        if done {
            break;
        }
        match kv::set(&format!("fill-{written}"), &value) {
            Ok(()) => written += 1,
            Err(e) => {
                error = describe(&e);
                break;
            }
        }
    }
    Ok(vec![fields(
        "kv-fill",
        &[("written", written.to_string()), ("error", error)],
    )])
}

/// `crm-flood`: many distinct lookups, going on after errors.
fn crm_flood() -> Result<Vec<Action>, PluginError> {
    let count: u64 = config_int("count")?.unwrap_or(200_000);
    let (mut ok, mut failed, mut error) = (0u64, 0u64, String::new());
    for i in 0..count {
        match crm::lookup_email(&format!("u{i}@d{i}.example")) {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                if error.is_empty() {
                    error = describe(&e);
                }
            }
        }
    }
    Ok(vec![fields(
        "crm-flood",
        &[
            ("ok", ok.to_string()),
            ("failed", failed.to_string()),
            ("error", error),
        ],
    )])
}

/// `sick`: fails until the kv key `healed` is set.
fn sick() -> Result<Vec<Action>, PluginError> {
    match kv::get("healed") {
        Ok(Some(_)) => Ok(vec![tag("sick", "healed")]),
        Ok(None) => Err(PluginError::Internal("hostile: sick".to_string())),
        Err(e) => Err(PluginError::Dependency(format!(
            "hostile: sick: kv {}",
            describe(&e)
        ))),
    }
}

/// `count`: record the run under a random key, then spin `ms`.
fn count() -> Result<Vec<Action>, PluginError> {
    // A fresh instance per call seeds `RandomState` from WASI's random
    // source, so concurrent runs on several hosts get distinct keys.
    let run = std::collections::hash_map::RandomState::new().hash_one(0u8);
    let key = format!("run-{run:016x}");
    kv::set(&key, "started")
        .map_err(|e| PluginError::Dependency(format!("hostile: count: kv {}", describe(&e))))?;
    let _ = log::log(Level::Info, &format!("count: {key}"));
    spin_for(config_int("ms")?.unwrap_or(0));
    Ok(vec![fields("count", &[("run", key)])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers() {
        assert_eq!(parse_int::<u64>("ms", " 42 ").ok(), Some(42));
        assert!(matches!(
            parse_int::<u64>("ms", "-1"),
            Err(PluginError::Internal(m)) if m == "hostile: config `ms` is not an integer"
        ));
        assert!(matches!(
            parse_int::<u16>("port", "70000"),
            Err(PluginError::Internal(m)) if m == "hostile: config `port` is out of range"
        ));
    }

    #[test]
    fn bounded_recursion_returns() {
        assert_eq!(descend(Some(0)), 0);
        assert!(descend(Some(100)) >= 100);
    }

    #[test]
    fn kv_outcomes_name_the_case() {
        assert_eq!(kv_outcome(Ok(Some("1".to_string()))), "ok:1");
        assert_eq!(kv_outcome(Ok(None)), "ok:");
        assert_eq!(kv_outcome(Err(HostError::Denied("x".into()))), "denied");
        assert_eq!(kv_outcome(Err(HostError::Invalid("x".into()))), "invalid");
        assert_eq!(
            kv_outcome(Err(HostError::Unavailable("x".into()))),
            "unavailable"
        );
    }

    #[test]
    fn padded_keys_are_distinct_and_long_enough() {
        assert_eq!(padded_key(7, 0), "k7");
        assert_eq!(padded_key(7, 5), "k7___");
        assert_ne!(padded_key(1, 5), padded_key(11, 5));
    }

    #[test]
    fn printed_lines_have_fixed_width() {
        let line = format!("{:0>width$}", 123_456_u64, width = LINE_CHARS);
        assert_eq!(line.len(), LINE_CHARS);
        assert!(line.ends_with("123456"));
    }
}
