//! An explicit hand-off through SQLite's busy handler: the first time a statement
//! finds the database busy, run a given action (release a lease, tell a holder to
//! finish), then keep waiting. A test that uses it knows the busy-handler path ran,
//! instead of hoping a sleep made it run.

use std::cell::RefCell;
use std::time::Duration;

use rusqlite::Connection;

type Action = Box<dyn FnOnce()>;

thread_local! {
    /// The action for this thread's next busy-handler call, and the calls so far.
    static FIRST_BUSY: RefCell<(Option<Action>, u32)> = const { RefCell::new((None, 0)) };
}

/// Give `c` a busy handler whose first call runs `action`; it then waits in 10 ms
/// steps, for at most a minute. SQLite calls it on the thread running the statement,
/// so install it on the thread that runs it.
pub fn on_first_busy(c: &mut Connection, action: impl FnOnce() + 'static) {
    FIRST_BUSY.with(|f| *f.borrow_mut() = (Some(Box::new(action)), 0));
    c.busy_handler(Some(handler)).unwrap();
}

/// How many times this thread's busy handler was called since [`on_first_busy`].
pub fn busy_calls() -> u32 {
    FIRST_BUSY.with(|f| f.borrow().1)
}

fn handler(_count: i32) -> bool {
    let action = FIRST_BUSY.with(|f| {
        let mut f = f.borrow_mut();
        f.1 += 1;
        f.0.take()
    });
    if let Some(action) = action {
        action();
    }
    std::thread::sleep(Duration::from_millis(10));
    busy_calls() < 6000
}
