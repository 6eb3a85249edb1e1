"""Stand-in for the seed's ParallelPipelining: calls DeepFashion `input` times and reports the call times."""

import time
from typing import Any

import Algorithmia  # type: ignore[import-not-found]  # the platform's client; the local cluster provides it

# Another algorithm's data file, in that algorithm's collection: where the seed put it.
IMAGE = "data://.my/DeepFashion/willow_example.jpeg"


def apply(input: Any) -> dict[str, float]:
    if not isinstance(input, int) or input < 1:
        raise ValueError("input must be a positive number of calls")
    client = Algorithmia.client()
    timings = []
    for _ in range(input):
        started = time.perf_counter()
        client.algo("algo://.my/DeepFashion/latestPrivate").pipe(IMAGE)
        timings.append(time.perf_counter() - started)
    return {"maximum_time": max(timings), "minimum_time": min(timings), "average_time": sum(timings) / len(timings)}
