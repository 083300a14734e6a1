//! `coordinator pki ...`: runs one subcommand and says what it wrote on stderr.
use crate::cli::PkiCommand;
use crate::error::CliError;

use super::{IssueOptions, Role, init, issue, revoke};

/// Runs a `pki` subcommand; bad input (a taken name, no CA) exits 2.
pub fn run_command(command: PkiCommand) -> Result<i32, CliError> {
    let bad = |e: super::PkiError| CliError::bad_input(e.to_string());
    match command {
        PkiCommand::Init { dir, days } => {
            let paths = init(&dir, days).map_err(bad)?;
            eprintln!(
                "created CA {} and {} (valid for {days} days)",
                paths.cert.display(),
                paths.key.display()
            );
        }
        PkiCommand::Issue {
            dir,
            name,
            sidecar,
            coordinator: _,
            hosts,
            days,
        } => {
            let role = if sidecar {
                Role::Sidecar
            } else {
                Role::Coordinator
            };
            let issued = issue(&dir, &name, role, &IssueOptions { hosts, days }).map_err(bad)?;
            eprintln!("{}", issued.describe());
        }
        PkiCommand::Revoke { dir, target } => {
            let revocation = revoke(&dir, &target).map_err(bad)?;
            eprintln!("{}", revocation.describe());
        }
    }
    Ok(0)
}
