//! End-to-end test harness: spawns the real `coordinator` and `sidecar` binaries on
//! 127.0.0.1 with mTLS, waits on what they print (never on fixed sleeps), keeps their logs
//! and prints them when a test fails, and kills every process it started when dropped.
//!
//! A test usually goes:
//!
//! ```no_run
//! use agentfleet_e2e::{SidecarOptions, TestEnv};
//! let env = TestEnv::new("example");
//! let s1 = env.start_sidecar("s1", r#"[[job]]
//! name = "hello"
//! [[job.step]]
//! name = "say"
//! run = ["echo", "hello"]
//! "#, SidecarOptions::default());
//! let fleet = env.write_fleet(&[&s1]);
//! let plan = env.write_file("plan.toml", "[plan]\nname = \"p\"\n[[task]]\nname = \"t\"\njob = \"hello\"\n");
//! let out = env.run_plan(&plan, &fleet);
//! assert_eq!(out.code(), Some(0), "{out}");
//! ```
#![forbid(unsafe_code)]

pub mod background;
pub mod binaries;
pub mod browser;
pub mod coordinator;
pub mod env;
pub mod events;
pub mod faults;
pub mod files;
pub mod freeze;
pub mod grpc;
pub mod log_volume;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod sidecar;
pub mod ssis;
pub mod standin;
pub mod tmpfs;
pub mod wait;
pub mod wine;

pub use coordinator::CoordinatorOutput;
pub use env::TestEnv;
pub use events::RunEvents;
pub use files::toml_str;
pub use pki::Pki;
pub use sidecar::{Sidecar, SidecarOptions};
pub use wait::wait_until;
