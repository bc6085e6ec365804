//! Waiting for a condition the store reaches in the background (a warm lease given
//! back after `lease_linger_ms`): polled, failing after a minute. A condition, never
//! a timing.

use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Wait until `done` holds; panic after a minute.
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until the lease `c`'s store kept warm after its last write is given back.
#[track_caller]
pub fn until_lease_released(c: &Connection) {
    wait_until("the warm lease is given back after its linger", || {
        super::status(c)["lease_held"] == false
    });
}
