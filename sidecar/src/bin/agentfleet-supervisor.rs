//! `agentfleet-supervisor --execution-dir DIR`: the supervisor of one command-job execution
//! (see `agentfleet_sidecar::supervisor`), as a binary of its own. The sidecar starts one
//! per execution; this binary links only what a supervisor needs (no gRPC, TLS, SQL Server
//! or telemetry export), so it starts in a fraction of the time and memory of `sidecar
//! supervise`, which remains the fallback when this binary is not installed beside the
//! sidecar.
use std::path::PathBuf;
use std::process::ExitCode;

use agentfleet_sidecar::supervisor::{self, SuperviseArgs};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let execution_dir = match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(dir), None) if flag == "--execution-dir" => PathBuf::from(dir),
        _ => {
            eprintln!(
                "usage: agentfleet-supervisor --execution-dir DIR\n(started by the sidecar for each command-job execution; not meant to be run by hand)"
            );
            return ExitCode::from(2);
        }
    };
    ExitCode::from(supervisor::main(&SuperviseArgs { execution_dir }))
}
