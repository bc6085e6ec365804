//! The flusher's moment on the cache's SHARED lock. To read the deferred commits it
//! holds SHARED for as long as reading the changed chunks takes (local reads, no
//! network); a COMMIT of this process that meets it (EXCLUSIVE refused) waits it out
//! instead of answering SQLITE_BUSY, which a lone connection without a busy_timeout
//! (the `sqlite3` shell, speedtest1) would take as a failed COMMIT. A fallback upload
//! under the lock (network) is not such a moment: then the COMMIT is BUSY as before.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The longest a COMMIT waits for the flusher's read (a safety net: the read
/// is of at most 64 MiB of the local cache).
const MOST: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct FlusherHold {
    state: Mutex<HoldState>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct HoldState {
    /// The flusher holds SHARED for a read of the cache now.
    reading: bool,
    /// Reads ended so far: a lock call that failed just as one ended retries.
    ended: u64,
}

/// What a lock call saw before it tried: see [`FlusherHold::wait_out`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct HoldMark(u64);

impl FlusherHold {
    /// The flusher took SHARED to read.
    pub fn reading(&self) {
        self.state.lock().reading = true;
    }

    /// The flusher's read is over (it unlocked, or goes on to network work under
    /// the lock, which a COMMIT must not wait for).
    pub fn read_over(&self) {
        let mut st = self.state.lock();
        if std::mem::take(&mut st.reading) {
            st.ended += 1;
            self.ended.notify_all();
        }
    }

    /// Taken before a lock call.
    pub fn mark(&self) -> HoldMark {
        HoldMark(self.state.lock().ended)
    }

    /// A lock call since `mark` was refused: wait while the flusher reads. `true`
    /// when a read of the flusher was (or may have been) what refused it, so a
    /// retry may succeed.
    pub fn wait_out(&self, mark: HoldMark) -> bool {
        let deadline = Instant::now() + MOST;
        let mut st = self.state.lock();
        let was_reading = st.reading;
        while st.reading {
            if self.ended.wait_until(&mut st, deadline).timed_out() {
                return false;
            }
        }
        was_reading || st.ended != mark.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_refused_lock_waits_out_a_read_and_only_a_read() {
        let hold = Arc::new(FlusherHold::default());
        // Nobody reads: the refusal was someone else's.
        assert!(!hold.wait_out(hold.mark()));
        // A read that ends while the caller waits.
        hold.reading();
        let mark = hold.mark();
        let other = hold.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.read_over();
        });
        let start = Instant::now();
        assert!(hold.wait_out(mark));
        assert!(start.elapsed() >= Duration::from_millis(40));
        t.join().unwrap();
        // A read that ended between the refusal and the wait: retry.
        let mark = hold.mark();
        hold.reading();
        hold.read_over();
        assert!(hold.wait_out(mark));
        // Ended twice over is no more than once: nothing new since this mark.
        assert!(!hold.wait_out(hold.mark()));
    }
}
