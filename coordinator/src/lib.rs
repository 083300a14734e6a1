//! The agentfleet coordinator: runs a plan of jobs across a fleet of sidecars.
#![forbid(unsafe_code)]

pub mod events;
pub mod pki;
pub mod report;
pub mod fleet_config;
pub mod plan;
pub mod schedule;
