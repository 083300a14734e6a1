//! End-to-end test harness: spawns the real binaries.
