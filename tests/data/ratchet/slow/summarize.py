"""The example's summarize, slowed down: 0.5 s more on texts, and hanging (past any timeout) on documents."""

import time

import Algorithmia


def apply(input):
    if "document" in input:
        time.sleep(60)  # the test's timeout must stop this call: the worker is killed long before
    time.sleep(0.5)
    client = Algorithmia.client()
    text = input["text"]
    counts = client.algo("algo://.my/count_words/latestPrivate").pipe(text).result
    headline = client.algo("algo://.my/first_sentence/latestPrivate").pipe(text).result
    return {"headline": headline, "top_words": [word for word, _ in counts[:3]], "words": sum(n for _, n in counts)}
