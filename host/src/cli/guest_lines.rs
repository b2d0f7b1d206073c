//! What a plugin printed and logged during `enrichd plugin run`, kept for its
//! report: a tracing layer that keeps the events of the `enrichd::guest`
//! target (the `log` import's lines, stdout and stderr lines, and the host's
//! end-of-call note), which `serve` only writes to its log. The host has
//! already bounded them by the plugin's log budget.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// The target the plugin runtime logs guest output under.
pub(super) const GUEST_TARGET: &str = "enrichd::guest";

/// One line.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct GuestLine {
    /// `stdout` or `stderr` for printed lines, `log` for the `log` import,
    /// `host` for the host's note on the call (what its budgets dropped).
    pub stream: String,
    /// Its level (`info` for printed lines).
    pub level: String,
    /// The line.
    pub message: String,
}

/// The lines kept so far; shared by the layer and the command.
#[derive(Debug, Clone, Default)]
pub(super) struct GuestLines(Arc<Mutex<Vec<GuestLine>>>);

impl GuestLines {
    /// Everything kept, in order.
    pub fn take(&self) -> Vec<GuestLine> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GuestLines {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != GUEST_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level();
        // The host's note says `source = "host"`; the `log` import's lines
        // are the others without a stream.
        let stream = match (fields.stream, fields.host) {
            (_, true) => "host".into(),
            (Some(stream), false) => stream,
            (None, false) => "log".into(),
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(GuestLine {
                stream,
                level: level.as_str().to_lowercase(),
                message: fields.message,
            });
    }
}

/// The fields of one guest event this layer keeps.
#[derive(Default)]
struct Fields {
    message: String,
    stream: Option<String>,
    host: bool,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "stream" => self.stream = Some(value.to_string()),
            "source" => self.host = value == "host",
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "stream" => self.stream = Some(format!("{value:?}").trim_matches('"').to_string()),
            _ => {}
        }
    }
}
