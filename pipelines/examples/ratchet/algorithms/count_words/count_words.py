"""How often each word of a text occurs, most frequent first; the words come from the tokenize algorithm."""

from collections import Counter

import Algorithmia  # type: ignore[import-not-found]  # the platform's client; the local cluster provides it


def apply(input: object) -> list[list[object]]:
    words = Algorithmia.client().algo("algo://.my/tokenize/latestPrivate").pipe(input).result
    return [[word, count] for word, count in Counter(words).most_common()]
