"""Stand-in for the seed's BoundingBoxOnImage: reads the image at imageUrl and counts the boxes it would draw."""

from typing import Any

import Algorithmia  # type: ignore[import-not-found]  # the platform's client; the local cluster provides it


def apply(input: dict[str, Any]) -> dict[str, Any]:
    image = Algorithmia.client().file(input["imageUrl"]).getBytes()
    return {"output": input["imageSaveUrl"], "boxes": len(input["boundingBoxes"]), "bytes": len(image)}
