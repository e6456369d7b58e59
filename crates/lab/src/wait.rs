//! Waiting for a condition with a deadline: the one helper the lab, the
//! benchmarks and every end-to-end test use instead of sleeping a guessed
//! time. Polls every 50 ms (fast enough that a test waits ~nothing past the
//! moment the condition holds, slow enough to cost no CPU), and always ends.

use std::time::{Duration, Instant};

/// How often the condition is checked.
pub const POLL: Duration = Duration::from_millis(50);

/// Checks `f` until it holds (true) or `timeout` passes (false). `f` runs at
/// least once, also with a zero timeout.
pub fn until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`until`], for tests: panics with `what` when the time runs out.
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(
        until(timeout, f),
        "timed out after {timeout:?} waiting for {what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_when_true_or_at_the_deadline() {
        let mut n = 0;
        assert!(until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        let t = Instant::now();
        assert!(!until(Duration::from_millis(120), || false));
        assert!(t.elapsed() >= Duration::from_millis(120));
        let mut ran = false;
        assert!(!until(Duration::ZERO, || {
            ran = true;
            false
        }));
        assert!(ran, "runs once even with no time");
    }

    #[test]
    #[should_panic(expected = "waiting for the moon")]
    fn wait_until_names_what_it_waited_for() {
        wait_until("the moon", Duration::from_millis(10), || false);
    }
}
