"""The example's first_sentence, broken: every call fails."""


def apply(input):
    raise ValueError("broken on purpose")
