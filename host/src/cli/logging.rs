//! Where and how enrichd logs: one tracing subscriber writing to stderr, as
//! text for people or as JSON lines for a collector (`--log-format`). The
//! spans enrichd opens (one per delivery, one per EngageLab callback) are on
//! every line logged inside them: in text as the line's prefix, in JSON as
//! the `span` object and the `spans` list, so every line about a delivery
//! can be found by its id.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use super::guest_lines::{GuestLines, GUEST_TARGET};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's fields (`message` among them), `span` (the innermost span's
    /// fields) and `spans` (every open span, outermost first).
    Json,
    /// Human-readable lines (coloured on a terminal).
    Text,
}

impl LogFormat {
    /// `--log-format` when given; otherwise text when stderr is a terminal
    /// (a person reads it), JSON when it is not (a file, journald, a
    /// collector reads it).
    pub fn or_default(format: Option<LogFormat>) -> LogFormat {
        format.unwrap_or(if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            LogFormat::Text
        } else {
            LogFormat::Json
        })
    }
}

/// Install the global subscriber: stderr in `format`, filtered by
/// `RUST_LOG` (default `info`). With `kept`, the guest's lines (target
/// `enrichd::guest`) go to `kept` at every level instead of the log
/// (`plugin run` reports them itself).
pub(super) fn init(format: LogFormat, kept: Option<GuestLines>) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for people: piped into a file or a collector, plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_ansi(ansi).with_filter(filter).boxed(),
    };
    let Some(kept) = kept else {
        // Also bridges the `log` crate's records (as `fmt().init()` did).
        tracing_subscriber::registry().with(log).try_init()?;
        return Ok(());
    };
    let kept = kept.with_filter(
        tracing_subscriber::filter::Targets::new().with_target(GUEST_TARGET, tracing::Level::TRACE),
    );
    let log = log.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
        meta.target() != GUEST_TARGET
    }));
    // Not `try_init()`: it would also bridge the `log` crate at the most
    // verbose level a layer wants (TRACE, for the guest's lines), and
    // cranelift's `log::trace!` records then cost minutes per large
    // component.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(log).with(kept))?;
    Ok(())
}
