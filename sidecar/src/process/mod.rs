//! Process supervision, in one place per OS: spawn a program in a process group of its
//! own, and terminate its whole tree with grace, then kill.
//!
//! Both `unix.rs` and `windows.rs` offer the same functions:
//! - `spawn(cmd) -> ProcessTree`: start `cmd` (stdin null, `kill_on_drop`) as the leader of
//!   a new group; the tree is killed if dropped before it was waited for or terminated;
//! - `ProcessTree::wait`: wait for the program itself;
//! - `terminate_tree(tree, grace)`: ask the tree to stop, wait up to `grace`, then kill it;
//! - `describe_exit(status)`: "exit code 3", "killed by signal 9 (SIGKILL)".
//!
//! Unix uses process groups: a descendant that moves itself to another group or session
//! (`setsid`, daemonising) escapes. Windows uses a Job Object per step (kill-on-close), which
//! holds every descendant, orphans included (see `windows.rs` for what it still misses).

#[cfg(unix)]
mod unix;
/// For tests: is a pid alive (zombies count as gone)?
#[cfg(all(test, target_os = "linux"))]
pub(crate) use unix::linux::is_live;
#[cfg(unix)]
pub use unix::{ProcessTree, describe_exit, spawn, terminate_tree};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::{ProcessTree, describe_exit, spawn, terminate_tree};
