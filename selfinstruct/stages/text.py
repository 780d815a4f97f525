"""What every stage's parser needs: no-input markers, markdown emphasis, one-line text."""

from __future__ import annotations

import re

# Ways a model says "this task has no input". They are normalised to "" for inputs only: an
# output of "None" or "N/A" is a real answer and is kept as written.
NO_INPUT_MARKERS = frozenset(
    {
        "",
        "none",
        "none.",
        "[none]",
        "(none)",
        "n/a",
        "na",
        "null",
        "nil",
        "-",
        "empty",
        "<noinput>",
        "<no input>",
        "no input",
        "no input.",
        "no input needed",
        "no input required",
        "not applicable",
        "not applicable.",
    }
)


def clean_input(text: str) -> str:
    """An instance input with surrounding space removed; no-input markers become ""."""
    text = text.strip()
    return "" if text.lower() in NO_INPUT_MARKERS else text


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


# Markdown a chat model wraps around labels and list items ("**Input:**", "### Example 1").
_EMPHASIS = re.compile(r"\*\*|__")


def unmark(line: str) -> str:
    return _EMPHASIS.sub("", line)
