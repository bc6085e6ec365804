#!/usr/bin/env python3
# Issue 26 design model (docs/ARCHITECTURE.md, "Units of change"): which pages each
# one-row autocommit changes, by diffing the database file before and after it.
# Usage: trace.py DB ROWS COMMITS   (writes DB.trace.json)
# Trace which pages each one-row autocommit changes (diff of the file before/after).
import sqlite3, sys, zlib, os, json
path, rows, commits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PAGE = 4096
if os.path.exists(path): os.remove(path)
c = sqlite3.connect(path, isolation_level=None)
c.execute("PRAGMA page_size=4096")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
c.execute("BEGIN")
c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?) INSERT INTO t(b) SELECT randomblob(1000) FROM n", (rows,))
c.execute("COMMIT")
def pages():
    with open(path, 'rb') as f: data = f.read()
    return [zlib.crc32(data[i:i+PAGE]) for i in range(0, len(data), PAGE)]
prev = pages()
trace = {"size": len(prev)*PAGE, "commits": []}
for k in range(commits):
    c.execute("INSERT INTO t(b) VALUES(randomblob(100))")
    cur = pages()
    changed = [i for i in range(len(cur)) if i >= len(prev) or cur[i] != prev[i]]
    trace["commits"].append({"len": len(cur)*PAGE, "pages": changed})
    prev = cur
json.dump(trace, open(path + ".trace.json", "w"))
print(trace["size"], [len(x["pages"]) for x in trace["commits"]][:20])
print([x["pages"] for x in trace["commits"]][:5])
