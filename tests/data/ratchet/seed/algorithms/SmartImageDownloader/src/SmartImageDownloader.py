"""Stand-in for the seed's SmartImageDownloader: fetches the image its payload names and says what it got."""

import Algorithmia  # type: ignore[import-not-found]  # the platform's client; the local cluster provides it


def apply(input: dict[str, object]) -> dict[str, object]:
    image = Algorithmia.client().file(input["image"]).getBytes()
    return {"savePath": ["data://.algo/temp/willow.jpeg"], "bytes": len(image), "resize": input.get("resize")}
