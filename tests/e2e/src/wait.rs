//! Bounded polling: the one way tests wait for a condition that has no event to wait on
//! (a file appearing, a process being reaped). Always with a deadline, never a fixed sleep.
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Async twin of [`wait_until`], for use inside a tokio runtime.
pub async fn wait_until_async<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_at_the_deadline() {
        let result = std::panic::catch_unwind(|| {
            wait_until(Duration::from_millis(50), "nothing", || None::<()>)
        });
        assert!(result.is_err());
        assert_eq!(
            wait_until(Duration::from_millis(50), "a value", || Some(7)),
            7
        );
    }
}
