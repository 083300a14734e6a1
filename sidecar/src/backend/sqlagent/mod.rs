//! SQL Server Agent jobs through tiberius.
//!
//! * `queries` — every T-SQL text sent (markers, parameters, result sets).
//! * `agent` — `SqlAgentBackend`: catalogue and the start handshake with its ledger.
//! * `follower` — the one poller per server (one `poll` batch per tick for all runs).
//! * `tracker` — per-run state machine turning msdb observations into events (pure).
//! * `check` — `sidecar check` items.

mod agent;
pub mod agent_time;
mod catalog;
pub mod check;
pub mod config;
pub(crate) mod connection;
mod errors;
mod follower;
pub(crate) mod ledger;
mod output_file;
mod poll;
pub mod queries;
pub(crate) mod rows;
pub(crate) mod tracker;

pub use agent::SqlAgentBackend;
pub use check::{CheckItem, CheckStatus, check};
pub use config::SqlAgentConfig;
