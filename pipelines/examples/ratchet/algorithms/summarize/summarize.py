"""A text's headline and its most frequent words: {"text": ...} or {"document": "data://..."} in."""

from typing import Any

import Algorithmia  # type: ignore[import-not-found]  # the platform's client; the local cluster provides it


def apply(input: dict[str, Any]) -> dict[str, Any]:
    client = Algorithmia.client()
    text = client.file(input["document"]).getString() if "document" in input else input["text"]
    counts = client.algo("algo://.my/count_words/latestPrivate").pipe(text).result
    headline = client.algo("algo://.my/first_sentence/latestPrivate").pipe(text).result
    return {"headline": headline, "top_words": [word for word, _ in counts[:3]], "words": sum(n for _, n in counts)}
