//! SSIS catalog (SSISDB) executions: packages deployed to the catalog, started with
//! `catalog.create_execution` / `start_execution`, followed through the catalog views and
//! stopped with `catalog.stop_operation`. The T-SQL texts are in [`queries`].
pub mod queries;
