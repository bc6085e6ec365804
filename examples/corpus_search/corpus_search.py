#!/usr/bin/env python3
"""corpus_search: a full-text (FTS5) and vector (sqlite-vec vec0) index of a folder of text
files, in one SQLite database kept in blob storage by managedblob.

    python corpus_search.py ingest sample_texts      # one batch: one upload
    python corpus_search.py search "lease expiry"    # FTS5 hits and nearest vectors
    python corpus_search.py status

Where the database lives (the remote) comes from the environment:

    CORPUS_SEARCH_BACKEND=local   (default) the directory CORPUS_SEARCH_LOCAL_DIR
                                  (default ./corpus_remote)
    CORPUS_SEARCH_BACKEND=azure   the container CORPUS_SEARCH_AZURE_CONTAINER_URL, with a
                                  SAS in its query string or credentials from the
                                  environment (AZURE_STORAGE_CONNECTION_STRING, ...)

Each host keeps its own cache: ``--cache DIR`` or CORPUS_SEARCH_CACHE_DIR (default
./corpus_cache). A second host, with another cache, sees what the first one ingested.
CORPUS_SEARCH_DB names the database (default corpus.db). ``--json`` prints one JSON object.

Needs ``pip install ./python sqlite-vec`` and a Python whose sqlite3 can load extensions
(sqlite-vec needs it; Debian's /usr/bin/python3 can).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import sqlite_vec

import managedblob

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding import DIMENSIONS, embed, words  # noqa: E402

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL REFERENCES documents(id),
    seq INTEGER NOT NULL, body TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(path UNINDEXED, body, tokenize='porter unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vec USING vec0(embedding float[{DIMENSIONS}]);
"""


class Usage(Exception):
    """A setting or argument the user must fix; printed without a traceback."""


def remote_from_env() -> str:
    backend = os.environ.get("CORPUS_SEARCH_BACKEND", "local")
    if backend == "local":
        remote = Path(os.environ.get("CORPUS_SEARCH_LOCAL_DIR", "corpus_remote"))
        remote.mkdir(parents=True, exist_ok=True)
        return str(remote.resolve())
    if backend == "azure":
        url = os.environ.get("CORPUS_SEARCH_AZURE_CONTAINER_URL")
        if not url:
            raise Usage("CORPUS_SEARCH_BACKEND=azure needs CORPUS_SEARCH_AZURE_CONTAINER_URL")
        return url
    raise Usage(f"CORPUS_SEARCH_BACKEND must be local or azure, not {backend!r}")


def open_corpus(cache_dir: str, fetch: Optional[str] = None) -> sqlite3.Connection:
    """The corpus database on this host's cache, with sqlite-vec loaded and the schema made.
    ``fetch="lazy"``: the cache is sparse, and a search fetches only what it reads."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    name = os.environ.get("CORPUS_SEARCH_DB", "corpus.db")
    conn = managedblob.connect(cache / name, remote=remote_from_env(), fetch=fetch)
    try:
        conn.enable_load_extension(True)
    except AttributeError:
        raise Usage(
            "sqlite-vec needs a Python whose sqlite3 module can load extensions "
            "(this one cannot); use Debian's /usr/bin/python3"
        ) from None
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    return conn


def paragraphs(text: str) -> List[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def ingest(conn: sqlite3.Connection, folder: Path) -> Dict[str, int]:
    """Index every *.txt under ``folder`` (new or changed files only), all in one batch."""
    files = sorted(folder.rglob("*.txt"))
    if not files:
        raise Usage(f"no *.txt files under {folder}")
    counts = {"files": 0, "chunks": 0, "unchanged": 0}
    with managedblob.batch(conn):
        conn.executescript(SCHEMA)
        for file in files:
            path = file.relative_to(folder).as_posix()
            text = file.read_text(encoding="utf-8")
            digest = hashlib.sha256(text.encode()).hexdigest()
            row = conn.execute("SELECT id, sha256 FROM documents WHERE path = ?", (path,)).fetchone()
            if row and row[1] == digest:
                counts["unchanged"] += 1
                continue
            if row:
                forget(conn, row[0])
            document = conn.execute(
                "INSERT INTO documents(path, sha256) VALUES (?, ?) "
                "ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256 RETURNING id",
                (path, digest),
            ).fetchone()[0]
            for seq, body in enumerate(paragraphs(text), start=1):
                chunk = conn.execute(
                    "INSERT INTO chunks(document_id, seq, body) VALUES (?, ?, ?)",
                    (document, seq, body),
                ).lastrowid
                conn.execute(
                    "INSERT INTO chunks_fts(rowid, path, body) VALUES (?, ?, ?)", (chunk, path, body)
                )
                conn.execute(
                    "INSERT INTO chunks_vec(rowid, embedding) VALUES (?, ?)",
                    (chunk, sqlite_vec.serialize_float32(embed(body))),
                )
                counts["chunks"] += 1
            counts["files"] += 1
    return counts


def forget(conn: sqlite3.Connection, document: int) -> None:
    """Remove a changed document's chunks from the three indexes."""
    chunks = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE document_id = ?", (document,))]
    for chunk in chunks:
        conn.execute("DELETE FROM chunks_fts WHERE rowid = ?", (chunk,))
        conn.execute("DELETE FROM chunks_vec WHERE rowid = ?", (chunk,))
    conn.execute("DELETE FROM chunks WHERE document_id = ?", (document,))


def search(conn: sqlite3.Connection, query: str, k: int) -> Dict[str, List[Dict[str, Any]]]:
    """The best ``k`` FTS5 matches (any of the query's words, by bm25) and the ``k``
    nearest chunks by embedding."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks_vec'").fetchone() is None:
        raise Usage("the corpus is empty: run `ingest <folder>` first (on any host)")
    terms = words(query)
    fts: List[Dict[str, Any]] = []
    if terms:
        match = " OR ".join(f'"{t}"' for t in terms)
        for path, seq, snippet, score in conn.execute(
            "SELECT f.path, c.seq, snippet(chunks_fts, 1, '[', ']', '...', 10), bm25(chunks_fts) "
            "FROM chunks_fts f JOIN chunks c ON c.id = f.rowid "
            "WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
            (match, k),
        ):
            fts.append({"path": path, "chunk": seq, "score": round(-score, 3), "snippet": snippet})
    vector: List[Dict[str, Any]] = []
    for path, seq, distance, body in conn.execute(
        "SELECT d.path, c.seq, v.distance, c.body "
        "FROM (SELECT rowid, distance FROM chunks_vec WHERE embedding MATCH ? AND k = ?) v "
        "JOIN chunks c ON c.id = v.rowid JOIN documents d ON d.id = c.document_id "
        "ORDER BY v.distance",
        (sqlite_vec.serialize_float32(embed(query)), k),
    ):
        vector.append({"path": path, "chunk": seq, "distance": round(distance, 3), "text": body})
    return {"fts": fts, "vector": vector}


def counters(status: Dict[str, Any]) -> Tuple[str, Dict[str, int]]:
    """The status line's figures: versions published and taken in, requests, bytes."""
    r = status["requests"]
    figures = {
        "uploads": r.get("versions_up", r.get("upload", 0)),
        "downloads": r.get("versions_down", r.get("download", 0)),
        "requests": r["total"],
        "bytes_up": r["bytes_up"],
        "bytes_down": r["bytes_down"],
    }
    line = "  ".join(f"{k.replace('_', ' ')}: {v}" for k, v in figures.items())
    residence = status.get("residence")
    if status.get("fetch") == "lazy" and residence:
        # A lazy cache: what this process fetched, and how much of the database is here.
        figures["chunks_present"] = residence["chunks_present"]
        figures["chunks_total"] = residence["chunks_total"]
        line += (
            f"\nlazy cache: fetched {r['bytes_down']} bytes ({r.get('read_range', 0)} ranged reads); "
            f"{residence['chunks_present']} of {residence['chunks_total']} chunks of "
            f"{residence['chunk_size']} bytes present"
        )
    return line, figures


def shorten(text: str, width: int = 72) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache",
        default=os.environ.get("CORPUS_SEARCH_CACHE_DIR", "corpus_cache"),
        help="this host's cache directory",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--fetch",
        choices=["full", "lazy"],
        default=os.environ.get("CORPUS_SEARCH_FETCH"),
        help="full: this host keeps a whole copy (the default); lazy: a sparse cache that "
        "fetches what a search reads",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ingest", help="index a folder of .txt files").add_argument("folder", type=Path)
    find = commands.add_parser("search", help="full-text and vector search")
    find.add_argument("query")
    find.add_argument("-k", type=int, default=3, help="hits of each kind (default 3)")
    commands.add_parser("status", help="the database's managedblob status")
    args = parser.parse_args(argv)

    try:
        conn = open_corpus(args.cache, args.fetch)
        result: Dict[str, Any] = {}
        if args.command == "ingest":
            result.update(ingest(conn, args.folder))
        elif args.command == "search":
            result.update(search(conn, args.query, args.k))
        status = managedblob.status(conn)
        conn.close()
    except Usage as e:
        print(f"corpus_search: {e}", file=sys.stderr)
        return 2
    line, figures = counters(status)
    if args.json:
        print(json.dumps({**result, "remote": status["remote"], "counters": figures, "status": status}))
        return 0
    print(f"remote {status['remote']}, blob {status['blob']}, cache {args.cache}")
    if args.command == "ingest":
        print(
            f"ingested {result['files']} files ({result['chunks']} chunks), "
            f"{result['unchanged']} unchanged, in one batch"
        )
    elif args.command == "search":
        print(f"full-text (FTS5) hits for {args.query!r}:")
        for i, hit in enumerate(result["fts"], start=1):
            print(f"  {i}. {hit['path']} #{hit['chunk']}  bm25 {hit['score']:.3f}  {hit['snippet']}")
        print("nearest chunks (vec0):")
        for i, hit in enumerate(result["vector"], start=1):
            where = f"{hit['path']} #{hit['chunk']}"
            print(f"  {i}. {where}  distance {hit['distance']:.3f}  {shorten(hit['text'])}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
