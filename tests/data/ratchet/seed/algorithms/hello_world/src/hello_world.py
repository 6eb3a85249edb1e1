"""The seed's hello_world."""


def apply(input: str) -> str:
    return f"hello {input}"
