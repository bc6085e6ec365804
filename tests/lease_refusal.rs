//! A write refused because another writer holds the lease says why in
//! `last_error`: who holds it and until when, as far as the backend knows (the local
//! backend: pid, host and time left; Azure: the lease's state and duration).

use common::*;

fn a_refused_write_names_the_lease_holder(w: &World) {
    let holder = w.one_row("h1", "a.db");
    pragma(&holder, "PRAGMA managedblob_batch=begin").unwrap();
    let refused = w.open("h2", "a.db");
    refused.busy_timeout(std::time::Duration::ZERO).unwrap();
    let e = refused.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert!(is_busy(&e), "{e}");
    let s = status(&refused);
    let last_error = s["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("is held by another writer"),
        "{last_error}"
    );
    if w.is_local() {
        let who = format!("pid {} on ", std::process::id());
        assert!(
            last_error.contains(&who) && last_error.contains("for another"),
            "{last_error}"
        );
    } else {
        assert!(
            last_error.contains("lease state leased, duration fixed"),
            "{last_error}"
        );
    }
    pragma(&holder, "PRAGMA managedblob_batch=end").unwrap();
}

backend_tests!(a_refused_write_names_the_lease_holder);
