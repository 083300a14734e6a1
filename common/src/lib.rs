//! Pieces shared by the `coordinator` and the `sidecar`: the generated wire API,
//! TLS setup, duration parsing, retry backoff, the shutdown signal and telemetry.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod duration;
pub mod fault;
pub mod ids;
pub mod private;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// The generated `agentfleet.sidecar.v1` wire API.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("agentfleet.sidecar.v1");

    /// Encoded FileDescriptorSet, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/sidecar_v1_descriptor.bin"));

    /// The short lower-case names people, logs, spans and the store use.
    impl StepStatus {
        pub fn name(self) -> &'static str {
            match self {
                Self::Succeeded => "succeeded",
                Self::Failed => "failed",
                Self::Retry => "retry",
                Self::Canceled => "canceled",
                Self::TimedOut => "timed_out",
                Self::Unspecified => "unknown",
            }
        }
    }

    impl Outcome {
        pub fn name(self) -> &'static str {
            match self {
                Self::Succeeded => "succeeded",
                Self::Failed => "failed",
                Self::Canceled => "canceled",
                Self::TimedOut => "timed_out",
                Self::Lost => "lost",
                Self::Unspecified => "unknown",
            }
        }
    }

    impl LogStream {
        pub fn name(self) -> &'static str {
            match self {
                Self::Stdout => "stdout",
                Self::Stderr => "stderr",
                Self::Agent => "agent",
                Self::Catalog => "catalog",
                Self::Unspecified => "log",
            }
        }
    }
}

/// Version string both binaries report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Current time as Unix milliseconds (UTC).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
