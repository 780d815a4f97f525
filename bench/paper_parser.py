"""The paper's completion parsing, restated for comparison (not used by selfinstruct itself).

Self-Instruct's `prepare_for_finetuning.py` (yizhongw/self-instruct) reads instance completions
and `bootstrap_instructions.py` reads instruction lists. This module states what those scripts
decide, written afresh from their documented behaviour, so that benchmarks can count how many
instances each parser keeps on the same real completions. Instances are (input, output) pairs.
"""

from __future__ import annotations

import re
import string

_OUTPUT = re.compile(r"Output\s*\d*\s*:")
_INPUT = re.compile(r"Input\s*\d*\s*:")


def _input_output(text: str) -> tuple[str, str]:
    """Everything before the first "Output:" is the input, the piece after it the output."""
    pieces = _OUTPUT.split(text)
    if len(pieces) > 1:
        given, output = pieces[0].strip(), pieces[1].strip()
    else:
        given, output = "", text.strip()
    output = _INPUT.split(output)[0].strip()
    given = re.sub(r"^Input\s*\d*\s*:", "", given).strip()
    return given, output


def _usable(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    kept = [
        (i, o)
        for i, o in pairs
        if i != o and o != "" and not i.strip().endswith(":") and not o.strip().endswith(":")
    ]
    for k, (i, o) in enumerate(kept):
        if i and any(i == j and o != p for j, p in kept[:k]):
            return []  # one input with two outputs: the whole task goes
    return list(dict.fromkeys(kept))


def paper_instances(text: str, classification: bool, truncated: bool) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if classification:
        if "Class label:" not in text:
            return []
        for chunk in text.split("Class label:")[1:]:
            label, _, rest = chunk.strip().partition("\n")
            pairs.append((rest.strip(), label.strip()))
    else:
        body = text.strip()
        if re.search(r"Example\s?\d*\.?", body):
            for chunk in re.split(r"Example\s?\d*\.?", body):
                if chunk.strip():
                    pairs.append(_input_output(chunk))
        elif _OUTPUT.search(body):
            pairs.append(_input_output(body))
        else:
            return []
    if truncated:
        pairs = pairs[:-1]
    return _usable(pairs)


def paper_instructions(text: str, truncated: bool) -> list[str]:
    """The instruction list after "9.", with the paper's rule filters (it applied them here)."""
    if truncated:
        return []
    out = []
    for item in re.split(r"\n\d+\s?\. ", text):
        item = re.sub(r"\s+", " ", item).strip().capitalize()
        if not item or len(item.split()) <= 3 or len(item.split()) > 150:
            continue
        words = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files")
        words += ("map", "maps", "draw", "plot", "go to")
        if any(re.search(rf"\b{w}\b", item, re.IGNORECASE) for w in words):
            continue
        if item.startswith("Write a program") or item[0] in string.punctuation:
            continue
        if not item[0].isascii():
            continue
        out.append(item)
    return out
