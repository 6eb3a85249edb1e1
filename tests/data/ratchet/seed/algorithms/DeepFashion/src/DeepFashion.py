"""Stand-in for the seed's DeepFashion: its model files read once per worker, then the image it is given."""

from typing import Any

import Algorithmia  # type: ignore[import-not-found]  # the platform's client; the local cluster provides it

# The seed README's template-friendly name, and a data file's name as the workflow lists it: both are where the
# data file landed, the algorithm's own collection (data://local/DeepFashion/... locally).
LABEL_FILE = "data://.my/<algo>/label_map.pbtxt"
MODEL_FILE = "data://.my/artifacts/ssd_v1.1.pb"
_model: dict[str, Any] = {}


def apply(input: str) -> dict[str, Any]:
    client = Algorithmia.client()
    if not _model:  # a warm worker keeps it, as the platform did
        _model["labels"] = client.file(LABEL_FILE).getString().split()
        _model["weights"] = len(client.file(MODEL_FILE).getBytes())
    image = client.file(input).getBytes()
    return {"articles": [{"article_name": _model["labels"][0], "confidence": 0.9}], "image_bytes": len(image)}
