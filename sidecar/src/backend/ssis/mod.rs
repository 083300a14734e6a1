//! SSIS catalog (SSISDB) executions: packages deployed to the catalog, started with
//! `catalog.create_execution` / `start_execution`, followed through the catalog views and
//! stopped with `catalog.stop_operation`. The T-SQL texts are in [`queries`].
//!
//! * `queries` — every T-SQL text sent (markers, parameters, result sets).
//! * `command_line` — an Agent SSIS step's `/ISSERVER` command.
//! * `correlate` — which catalog execution an Agent step created (pure).
//! * `tracker` — per-execution state machine turning catalog rows into events (pure).
//! * `follower` — the one catalog poller per server and login (one `ssis_poll` per tick for all),
//!   with `poll` (its round trips) and `stop` (a catalog job's stop request).
//! * `agent_step` — the hook the SQL Server Agent follower calls for SSIS steps.
//! * `backend` — `CatalogBackend`: `[[catalog_job]]`s, started (`start`) through `ledger`.
//! * `config`, `check` — the config section and `sidecar check` items.
pub mod agent_step;
mod backend;
pub mod check;
pub mod command_line;
pub mod config;
pub mod correlate;
pub mod follower;
mod ledger;
mod poll;
pub mod queries;
mod rows;
mod start;
mod stop;
mod tracker;

pub use backend::CatalogBackend;
pub use config::CatalogJobConfig;
pub use tracker::{CatalogIdent, CatalogResume};
