"""The Self-Instruct stages, one module each: its template blocks, stop strings, sampling,
parser, checks, and how it records what it drops. A change to one stage touches its module.

- `instructions`: few-shot prompt -> new instructions -> rule filters and ROUGE-L novelty;
- `classification`: is each new instruction a classification task?
- `instances`: output-first or input-first instances -> the instance filters -> a task.
"""

from __future__ import annotations

from pathlib import Path

from selfinstruct.prompts import Templates
from selfinstruct.stages import classification, instances, instructions
from selfinstruct.stages.base import Ask, Candidate, Prefix, Slot, Stage, StageContext

# The loop's stages, in order: the first makes candidates from an instruction prompt, each later
# one takes a candidate on or decides it. A new stage is its module and one entry here.
FIRST = instructions.STAGE
THEN: tuple[Stage[Candidate], ...] = (classification.STAGE, instances.STAGE)
STAGES = (FIRST, *THEN)

TEMPLATES = instructions.TEMPLATES + classification.TEMPLATES + instances.TEMPLATES


def load_templates(directory: Path | None = None) -> Templates:
    """Every stage's templates, from `directory` (default: the ones shipped with selfinstruct)."""
    return Templates.load(TEMPLATES, directory)


__all__ = [
    "FIRST",
    "STAGES",
    "TEMPLATES",
    "THEN",
    "Ask",
    "Candidate",
    "Prefix",
    "Slot",
    "Stage",
    "StageContext",
    "classification",
    "instances",
    "instructions",
    "load_templates",
]
