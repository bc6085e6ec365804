//! `PRAGMA managedblob_status` reports HTTP requests per kind beside backend calls.
//! For the local backend a call is the request; the Azure counts (at the HTTP level)
//! are checked through a proxy in tests/http_faults.rs.

use common::*;

#[test]
fn local_requests_are_the_backend_calls() {
    let (_w, c) = World::with_one_row();
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let s = status(&c);
    let requests = &s["requests"];
    let http = requests["http"].as_object().unwrap();
    for (kind, n) in http {
        assert_eq!(*n, requests[kind.as_str()], "{kind}: {s}");
    }
    assert!(requests["total"].as_u64().unwrap() > 0, "{s}");
    assert!(http.contains_key("lease_acquire"), "{s}");
}
