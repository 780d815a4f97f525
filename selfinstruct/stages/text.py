"""What every stage's parser needs: no-input markers, markdown emphasis, one-line text, and
the JSON schema, hint and reader of structured replies."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from selfinstruct.backends.base import Prompt

T = TypeVar("T", bound=BaseModel)

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


# -- structured replies (--structured): a schema the server enforces, a hint the model reads --


def json_schema(
    model: type[BaseModel],
    list_field: str | None = None,
    max_items: int = 0,
    may_be_empty: frozenset[str] = frozenset(),
) -> str:
    """The reply schema of `model` as JSON text, its list `list_field` (if any) holding 1 to
    `max_items` items, every key required, no extra keys (what a strict server wants), and
    every string non-empty but the fields named in `may_be_empty`."""
    schema = model.model_json_schema()
    if list_field is not None:
        schema["properties"][list_field].update(minItems=1, maxItems=max_items)
    _close(schema, may_be_empty)
    return json.dumps(schema, sort_keys=True)


def _close(node: Any, may_be_empty: frozenset[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object":
            node["additionalProperties"] = False
            node["required"] = list(node.get("properties", {}))
            for name, prop in node.get("properties", {}).items():
                if prop.get("type") == "string" and name not in may_be_empty:
                    prop["minLength"] = 1
        if node.get("type") == "array" and node.get("items", {}).get("type") == "string":
            node["items"]["minLength"] = 1
        for value in node.values():
            _close(value, may_be_empty)
    elif isinstance(node, list):
        for value in node:
            _close(value, may_be_empty)


def with_json_hint(prompt: Prompt, hint: str) -> Prompt:
    """The chat prompt with the JSON reply format asked for at the end of its last message."""
    if isinstance(prompt, str):
        return f"{prompt}\n\n{hint}"
    *head, last = prompt
    return [*head, {**last, "content": f"{last['content']}\n\n{hint}"}]


def read_json(model: type[T], text: str) -> T | None:
    """The reply as `model`, or None when it is not valid JSON of that shape."""
    try:
        return model.model_validate_json(text.strip())
    except ValidationError:
        return None
