//! The one user-facing error type: a message that says what to do, and the exit code
//! PRODUCT.md promises for it.
use std::fmt;

/// Exit codes of the coordinator.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
    /// The run ended but the store could not save all of it (e.g. a full disk): nothing
    /// was acknowledged, the sidecars keep their journals, `attach RUN` re-imports them.
    pub const INCOMPLETE: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    /// Bad plan, fleet or flags: nothing was started.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            code: exit::BAD_INPUT,
            message: message.into(),
        }
    }

    /// The fleet could not be reached well enough to start.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            code: exit::UNREACHABLE,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: exit::FAILED,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
