//! The agentfleet coordinator: runs a plan of jobs across a fleet of sidecars.
#![forbid(unsafe_code)]

pub mod attach;
pub mod cli;
pub mod commands;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod execution;
pub mod fleet;
pub mod fleet_config;
pub mod inspect;
pub mod pki;
pub mod plan;
pub mod report;
pub mod schedule;
pub mod store;
pub mod sub_steps;
pub mod timeline;
