//! SSIS catalog (SSISDB) executions.
pub mod command_line;
pub mod config;
pub mod correlate;
mod rows;
mod tracker;

pub use tracker::{CatalogIdent, CatalogResume};
mod backend;
pub mod follower;
mod ledger;
mod poll;
pub mod queries;

pub use backend::CatalogBackend;
pub use config::CatalogJobConfig;
pub mod agent_step;
pub mod check;
