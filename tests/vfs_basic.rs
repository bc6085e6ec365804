mod common;
use common::*;

#[test]
fn first_write_uploads_once_and_downloads_nothing() {
    let w = World::new();
    let c = w.open("h1", "a.db");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let s = status(&c);
    println!("{s}");
    assert_eq!(s["requests"]["download"], 0);
    assert!(s["dirty"] == false);
    let n: i64 = read_remote(&w.remote_blob("a.db"), |r| {
        r.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(n, 1);
}
