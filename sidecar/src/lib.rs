//! The agentfleet sidecar: serves the `agentfleet.sidecar.v1` API on one server, starts
//! SQL Server Agent jobs and command jobs, and journals and streams their events.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod backend;
pub mod check;
pub mod config;
pub mod events;
pub mod executions;
pub mod journal;
pub mod process;
pub mod server;
pub mod service;
pub mod state_lock;
pub mod stop_note;
pub mod supervisor;
pub mod telemetry;
