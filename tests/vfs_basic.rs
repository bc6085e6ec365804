mod common;
use common::*;

#[test]
fn first_write_uploads_once_and_downloads_nothing() {
    let (w, c) = World::with_one_row();
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
