//! Command jobs: programs from the sidecar config, with SQL Server Agent step semantics.

pub mod config;
pub use config::{JobConfig, StepConfig};
