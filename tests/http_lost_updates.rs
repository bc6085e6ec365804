//! Four writer processes increment one counter on Azurite through the
//! fault-injecting proxy (tests/common/http_proxy.rs): 10 % of the requests that
//! write are cut off before they reach Azurite, 10 % have their reply dropped after
//! Azurite applied them. Each try is one transaction that increments the counter
//! and logs its own attempt id. Then: every COMMIT that returned OK is in the remote
//! exactly once, none that failed is in it twice, a failed one is in it exactly when
//! its outcome was resolved as applied (the error said "may have been applied", the
//! next read said which), the counter equals the log, the remote and every cache pass
//! integrity_check, and nothing is left behind. `retry_attempts=2`, so that some
//! commits fail.
//!
//! `MANAGEDBLOB_SOAK_INCREMENTS` (default 4) increments per process; CI runs the
//! default.
#![cfg(feature = "azure")]

use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::azurite;
use common::child::{self, Proc};
use common::http_proxy::{random_faults, Rates};
use managedblob::internal::backend::Backend;

const WRITERS: usize = 4;
const SETTINGS: &str = "&retry_base_ms=2&retry_attempts=2";

/// Entry point of every child process; returns at once in a normal test run.
#[test]
fn child_main() {
    child::child_main(&[("incrementer", incrementer)]);
}

/// `incrementer`: `MB_N` increments, each tried until a COMMIT returns OK; every try
/// has its own attempt id `<MB_TAG>-<increment>-<try>`, reported as `OK <id>` or
/// `FAIL <id>`.
fn incrementer(uri: &str) {
    let n: usize = child::env_num("MB_N");
    let tag = child::env("MB_TAG");
    let c = open(uri);
    c.busy_timeout(Duration::from_secs(20)).unwrap();
    for i in 0..n {
        for attempt in 0.. {
            assert!(attempt < 100, "increment {i} never committed");
            let id = format!("{tag}-{i}-{attempt}");
            let result = c.execute_batch(&format!(
                "BEGIN IMMEDIATE; UPDATE c SET v = v + 1; INSERT INTO log VALUES ('{id}'); COMMIT;"
            ));
            match result {
                Ok(()) => {
                    child::say(&format!("OK {id}"));
                    break;
                }
                Err(e) => {
                    let _ = c.execute_batch("ROLLBACK");
                    child::say(&format!("FAIL {id} {} {e}", outcome_of_failure(&c)));
                }
            }
        }
    }
    // The last try may be ambiguous: a read resolves it before the process ends.
    let _: i64 = c.query_row("SELECT v FROM c", [], |r| r.get(0)).unwrap();
    child::say("DONE");
}

/// What became of a failed try: `failed` (it never reached the remote), or, when
/// `last_error` said it may have been applied, what the next read resolved:
/// `applied` or `not-applied`.
fn outcome_of_failure(c: &rusqlite::Connection) -> &'static str {
    let last_error = |c: &rusqlite::Connection| {
        status(c)["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    if !last_error(c).contains("may have been applied") {
        return "failed";
    }
    let _: i64 = c.query_row("SELECT v FROM c", [], |r| r.get(0)).unwrap();
    let resolved = last_error(c);
    if resolved.contains("had been applied") {
        "applied"
    } else if resolved.contains("was not applied") {
        "not-applied"
    } else {
        panic!("an ambiguous commit was not resolved by the next read: {resolved}")
    }
}

#[test]
fn azurite_four_writers_through_resets_and_lost_replies() {
    let Some(az) = azurite::shared() else { return };
    init_logging();
    managedblob::register().unwrap();
    let (direct, proxy, remote) = azurite::container_behind_proxy(&az);
    let dir = tempfile::tempdir().unwrap();
    let uri = |host: &str| {
        let cache = dir.path().join(host).join("a.db");
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        uri_with_remote(&cache, &remote, SETTINGS)
    };
    open(&uri("setup"))
        .execute_batch("CREATE TABLE c(v); INSERT INTO c VALUES (0); CREATE TABLE log(id);")
        .unwrap();

    let n: usize = child::setting("MANAGEDBLOB_SOAK_INCREMENTS", 4);
    proxy.set_rule(random_faults(Rates {
        reset: 0.10,
        lose_reply: 0.10,
        ..Rates::default()
    }));
    let started = Instant::now();
    let mut writers: Vec<Proc> = (0..WRITERS)
        .map(|w| {
            let tag = format!("w{w}");
            Proc::spawn(
                &tag,
                "incrementer",
                &uri(&tag),
                &[("MB_N", n.to_string()), ("MB_TAG", tag.clone())],
            )
        })
        .collect();
    let (mut ok, mut failed) = (BTreeSet::new(), BTreeMap::new());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for p in &mut writers {
        p.wait_success(Duration::from_secs(300));
        let marks = p.drain();
        assert!(marks.iter().any(|m| m == "DONE"), "{}", p.output());
        for m in marks {
            if let Some(id) = m.strip_prefix("OK ") {
                ok.insert(id.to_string());
            } else if let Some(rest) = m.strip_prefix("FAIL ") {
                let mut parts = rest.splitn(3, ' ');
                let id = parts.next().unwrap().to_string();
                let outcome = parts.next().unwrap_or_default().to_string();
                *reasons.entry(outcome.clone()).or_default() += 1;
                failed.insert(id, outcome);
            }
        }
    }
    let took = started.elapsed();
    proxy.pass_all();

    // The remote, read back directly.
    let mut bytes = Vec::new();
    direct.download("a.db", &mut bytes).unwrap();
    let copy = dir.path().join("remote.db");
    std::fs::write(&copy, bytes).unwrap();
    let (counter, logged, check) = read_remote(&copy, |r| {
        let counter: i64 = r
            .query_row("SELECT v FROM c", [], |row| row.get(0))
            .unwrap();
        let logged: Vec<String> = column(r, "SELECT id FROM log");
        (counter, logged, integrity(r))
    });
    assert_eq!(check, "ok");
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &logged {
        *times.entry(id.as_str()).or_default() += 1;
    }
    for id in &ok {
        assert_eq!(
            times.get(id.as_str()),
            Some(&1),
            "OK commit {id} not in the remote once"
        );
    }
    for (id, outcome) in &failed {
        let found = times.get(id.as_str()).copied().unwrap_or(0);
        assert!(found <= 1, "failed {id} twice");
        // Known, not guessed: in the remote exactly when resolved as applied.
        assert_eq!(
            found == 1,
            outcome == "applied",
            "failed try {id} ({outcome}) is in the remote {found} times"
        );
    }
    let failed_in_remote = failed
        .keys()
        .filter(|id| times.contains_key(id.as_str()))
        .count();
    assert_eq!(ok.len(), WRITERS * n);
    assert_eq!(
        counter as usize,
        logged.len(),
        "the counter and its log disagree"
    );
    assert!(
        logged
            .iter()
            .all(|id| ok.contains(id) || failed.contains_key(id)),
        "phantom attempt"
    );

    // Every cache reopens clean and equal to the remote; nothing is left behind.
    for w in 0..WRITERS {
        let host = format!("w{w}");
        let c = open(&uri(&host));
        let v: i64 = c.query_row("SELECT v FROM c", [], |r| r.get(0)).unwrap();
        assert_eq!(v, counter, "{host}");
        assert_eq!(integrity(&c), "ok", "{host}");
        let s = status(&c);
        assert_eq!(s["dirty"], false, "{host}: {s}");
        let side = sidecar(&dir.path().join(&host).join("a.db"));
        assert!(side.get("pending_commit").is_none(), "{host}: {side}");
    }
    let left: Vec<_> = ["-managedblob.json.tmp-", "-managedblob.download-"]
        .iter()
        .flat_map(|p| files_with(dir.path(), p))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let k = &proxy.counts;
    println!(
        "HTTP FAULTS FIGURES: {WRITERS} writers x {n} increments in {:.1} s; requests forwarded \
         {}, cut off {}, replies lost {}; tries OK {}, failed {} ({reasons:?}), failed tries \
         found applied {failed_in_remote}; counter {counter}",
        took.as_secs_f64(),
        k.forwarded.load(Relaxed),
        k.resets.load(Relaxed),
        k.lost_replies.load(Relaxed),
        ok.len(),
        failed.len(),
    );
}
