"""Every ```python block of README.md, python/README.md and docs/*.md runs as written
(issue 25, item 8), with this venv's Python and the installed package; the shell and Rust
blocks are cli/tests/docs.rs's.

Each block runs as its own process in a fresh directory holding the directories ``remote/``,
``h1/``, ``h2/`` and ``srv/remote/`` and the package's extension as ``libmanagedblob.so``, as
the docs assume; ``/srv/`` in a block is read as that directory's ``srv/``. It must exit 0,
and print exactly the lines its ``# -> `` comments give (a comment continues on the ``#``
lines under it, joined with a space). ``<!-- docs-test: skip (why) -->`` on the line before a
block skips it, with the reason; nothing else does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

import managedblob

from conftest import REPO

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
DIRECTIVE = re.compile(r"^\s*<!-- docs-test:\s*(.*?)\s*-->\s*$")


class Block:
    def __init__(self, at: str, lang: str, directive: str, text: str) -> None:
        self.at, self.lang, self.directive, self.text = at, lang, directive, text

    def skip_reason(self) -> Optional[str]:
        if self.directive.startswith("skip"):
            return self.directive[4:].strip().strip("()") or "no reason given"
        return None


def documents() -> List[Path]:
    return [REPO / "README.md", REPO / "python" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path) -> List[Block]:
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3)
        before = next((l for l in reversed(lines[:i]) if l.strip()), "")
        d = DIRECTIVE.match(before)
        at = f"{path.relative_to(REPO)}:{i + 1}"
        body = []
        i += 1
        while i < len(lines) and not lines[i].lstrip().startswith(fence):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip())):])
            i += 1
        found.append(Block(at, lang, d.group(1) if d else "", "\n".join(body) + "\n"))
        i += 1
    return found


def expected_output(text: str) -> List[str]:
    """The lines the block's ``# -> `` comments say it prints."""
    out: List[str] = []
    continuing = False
    for line in text.splitlines():
        comment = line.split("# -> ", 1)
        if len(comment) == 2:
            out.append(comment[1].strip())
            continuing = True
        elif continuing and line.lstrip().startswith("#"):
            out[-1] += " " + line.lstrip()[1:].strip()
        else:
            continuing = False
    return out


PYTHON_BLOCKS = [b for doc in documents() for b in blocks(doc) if b.lang == "python"]


def test_the_docs_have_python_blocks() -> None:
    # A reader that found nothing would pass vacuously.
    assert len(PYTHON_BLOCKS) >= 4, [b.at for b in PYTHON_BLOCKS]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.at for b in PYTHON_BLOCKS])
def test_python_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    why = block.skip_reason()
    if why is not None:
        pytest.skip(why)
    assert block.directive == "", f"{block.at}: unknown docs-test directive {block.directive!r}"
    for sub in ["remote", "h1", "h2", "srv/remote"]:
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "libmanagedblob.so").symlink_to(managedblob.loadable_path())
    code = block.text.replace("/srv/", f"{tmp_path}/srv/")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 0, f"{block.at}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    assert done.stdout.splitlines() == expected_output(block.text), (
        f"{block.at}: printed\n{done.stdout}\nstderr: {done.stderr}"
    )


def test_expected_output_reads_continued_comments() -> None:
    text = 'print(1)  # -> 1\nprint(x)\n# -> a b\n#    c\ny = 2\n'
    assert expected_output(text) == ["1", "a b c"]
