//! A writer SIGKILLed with its lease held, restarted on the same host with the same
//! cache, takes its own lease back at once instead of waiting `lease_secs` for it to
//! lapse. On Azure the lease carries no owner: the sidecar records the id and the
//! owner (pid, host, boot), and the restart renews-then-releases it with that id.
//! (The local backend's leases name their owner; tests/crash_kills.rs covers it.)
#![cfg(feature = "azure")]

use common::*;

use std::collections::BTreeSet;
use std::time::Duration;

use common::child::{self, Proc};

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[("batch_then_sleep", batch_then_sleep)]);
}

/// `batch_then_sleep`: begin a batch, commit row 1 inside it, say READY and sleep
/// until killed.
fn batch_then_sleep(uri: &str) {
    let c = open(uri);
    pragma(&c, "PRAGMA managedblob_batch=begin").unwrap();
    c.execute("INSERT INTO t(id) VALUES (1)", []).unwrap();
    assert_eq!(status(&c)["lease_held"], true);
    child::say("READY");
    child::sleep_while_parent_alive(Duration::from_secs(120));
    panic!("batch_then_sleep was not killed");
}

#[test]
fn azurite_a_restarted_writer_takes_back_its_own_lease() {
    let Some(w) = World::azurite() else { return };
    // The longest lease Azure grants: waiting it out would take a minute.
    let uri = w.uri("h1", "a.db", "&lease_secs=60");
    open(&uri)
        .execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        .unwrap();
    let mut writer = Proc::spawn("writer", "batch_then_sleep", &uri, &[]);
    writer.expect("READY", Duration::from_secs(30));
    writer.sigkill();

    let c = open(&uri);
    c.busy_timeout(Duration::from_secs(2)).unwrap();
    c.execute("INSERT INTO t(id) VALUES (2)", [])
        .unwrap_or_else(|e| panic!("the restarted writer waits for its own lease: {e}"));
    let s = status(&c);
    assert_eq!(s["dirty"], false, "{s}");
    let ids: BTreeSet<i64> = w.read_remote("a.db", |r| column(r, "SELECT id FROM t"));
    assert_eq!(
        ids,
        BTreeSet::from([1, 2]),
        "the batch's commit and the new one"
    );
}
