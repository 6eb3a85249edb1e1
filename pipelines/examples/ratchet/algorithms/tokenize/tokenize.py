"""Lower-cased words of a text, without the stop words listed in its data file."""

import re

import Algorithmia  # type: ignore[import-not-found]  # the platform's client; the local cluster provides it

# The seed's generic name: the export rewrites it to the destination's (data://local/tokenize/... locally).
STOPWORDS = "data://.my/<algo>/stopwords.txt"
_stopwords: set[str] = set()


def apply(input: object) -> list[str]:
    if not isinstance(input, str):
        raise TypeError(f"expected a text, found {type(input).__name__}")
    if not _stopwords:  # read once per worker, as a warm algorithm would
        _stopwords.update(Algorithmia.client().file(STOPWORDS).getString().split())
    return [word for word in re.findall(r"[a-z0-9']+", input.lower()) if word not in _stopwords]
