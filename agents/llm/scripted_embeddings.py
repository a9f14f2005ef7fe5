"""The scripted model server's embeddings (`POST /v1/embeddings`, OpenAI's shape): a
deterministic stand-in for a provider's embedding model, offline.

A text's vector is its words (but the shortest and commonest) hashed into `DIMENSIONS` buckets,
L2-normalised, after mapping
a few families of words that mean the same to one concept ("throttle", "rate", "limit",
"quota"): so, as with a real model, texts that share no word can still be near. It is meant
for tests and demos, and says nothing about how well a real model retrieves.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

EMBEDDING_MODEL_ID = "scripted-embedding"
DIMENSIONS = 256
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("the and for with from that this into was are not its our all any".split())
# Words of one meaning, as a real embedding model would place them close.
CONCEPTS = {
    word: concept
    for concept, words in {
        "ratelimit": "throttle throttling throttled rate rates limit limits limiter quota",
        "request": "request requests call calls hit hits",
        "page": "page pages pagination paginate paging",
        "fail": "fail fails failed failure error errors broken crash crashes",
        "test": "test tests testing spec specs",
    }.items()
    for word in words.split()
}


def embed(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _STOP:
            continue
        token = CONCEPTS.get(word) or CONCEPTS.get(word.rstrip("s"), word.rstrip("s"))
        digest = hashlib.blake2b(token.encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "big") % DIMENSIONS] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def embeddings_response(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The answer to an embeddings request: 200 with one vector per input, or 400."""
    given = request.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        error = {"message": "scripted model: 'input' must be a string or a list of strings",
                 "type": "invalid_request_error", "code": "bad_input"}  # fmt: skip
        return 400, {"error": error}
    tokens = sum(len(_WORD.findall(t)) for t in texts)
    return 200, {
        "object": "list",
        "model": EMBEDDING_MODEL_ID,
        "data": [
            {"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
