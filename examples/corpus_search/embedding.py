"""A small deterministic text embedding for the demo: no model, no download.

Feature hashing: every word and every character trigram of a word adds +-1 (words weigh
more) to one of ``DIMENSIONS`` coordinates chosen by a keyed hash; the vector is then scaled
to length 1. Texts that share words and word pieces land near each other, which is enough to
show a vec0 index answering nearest-neighbour queries next to FTS5. The same text always
gives the same vector, on every host.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Iterator, List, Tuple

DIMENSIONS = 256
_WORD = re.compile(r"[a-z0-9]+")
# Words too common to say anything about a text.
_STOP = frozenset(
    "a an and are as at be by for from in is it its of on or so that the their them then "
    "they this to was were while with".split()
)


def words(text: str) -> List[str]:
    """The lower-case words of ``text``, without stop words."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def _features(text: str) -> Iterator[Tuple[str, float]]:
    for word in words(text):
        yield "w:" + word, 1.0
        padded = f"<{word}>"
        for i in range(len(padded) - 2):
            yield "t:" + padded[i : i + 3], 0.35


def embed(text: str) -> List[float]:
    """The unit vector of ``text`` (all zeros for a text without words)."""
    vector = [0.0] * DIMENSIONS
    for feature, weight in _features(text):
        digest = hashlib.blake2b(feature.encode(), digest_size=8, key=b"corpus_search").digest()
        bucket = int.from_bytes(digest[:4], "little") % DIMENSIONS
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[bucket] += sign * weight
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector
