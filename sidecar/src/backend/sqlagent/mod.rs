//! SQL Server Agent jobs through tiberius.

pub mod config;
pub use config::SqlAgentConfig;
