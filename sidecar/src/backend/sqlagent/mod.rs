//! SQL Server Agent jobs through tiberius.

pub mod config;
pub mod queries;
pub use config::SqlAgentConfig;
