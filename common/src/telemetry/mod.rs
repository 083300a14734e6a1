//! One telemetry setup for both binaries:
//!
//! - logs: `tracing` with an env filter (RUST_LOG), plain or JSON lines on stderr ([`init`])
//!   or, for the Windows service, in a file ([`init_to_file`]);
//! - export ([`export::start`]): OTLP/gRPC spans, job log records and metrics, only when configured
//!   ([`settings`]), plus metrics kept for a Prometheus scrape where asked;
//! - spans built after the fact from events ([`span`]), with ids derived from the run,
//!   task, execution and step ([`ids`]), so every process names its spans and their
//!   parents without coordination, and W3C `traceparent` crosses the gRPC hop;
//! - metric names and units ([`metrics`]).
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub mod export;
pub mod ids;
pub mod log_record;
pub mod metrics;
pub mod prometheus;
mod queue;
pub mod settings;
pub mod span;

pub use export::{Telemetry, export_log, export_span, logs_enabled, spans_enabled};
pub use ids::TraceParent;
pub use log_record::LogLine;
pub use settings::ExportSettings;
pub use span::SpanRecord;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Installs the global subscriber. `default_filter` applies when RUST_LOG is unset.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Like [`init`], but writes to `file`, without colours: for the Windows service, which has
/// no stderr to write to.
pub fn init_to_file(default_filter: &str, format: LogFormat, file: std::fs::File) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let writer = std::sync::Mutex::new(file);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Plain => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(writer))
            .try_init(),
    };
    let _ = result;
}
