"""How a dataset was made, written into its card, and the dataset made again from the card.

Every export's card carries, in its YAML header under `selfinstruct:`, what made the data: the
generate run's resolved options (no secrets: a key is only ever named by its variable), the
package versions, the sha256 of the seed file, of every prompt template and of the run's journal,
the export's own settings, and the sha256 of the data written. `export --with-journal` puts the
journal beside the data.

`selfinstruct run --from-card FOLDER` reads that back (an export folder, or a dataset folder
downloaded from the hub): it checks the data against its recorded hash (data edited after export
is reported, not accepted), writes the job file that makes the same data, and, with the journal
beside the card, runs it: every request is answered from the journal (the `journal` backend), so
the data comes out again byte for byte without the model, and the command says whether it did.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from selfinstruct.errors import ConfigError, SelfInstructError

JOURNAL_FILE = "journal.jsonl"
# Export settings that make the data (where it is written is the rebuild's own choice).
EXPORT_FIELDS = (
    "format", "seed", "max_per_task", "include_seeds", "system", "license", "language",
)  # fmt: skip
# Generate options that say where the run was, not what it made; and a plugin backend's own
# options, which may hold anything (a token), so they are never written into a card.
_LEFT_OUT = ("run_dir", "seed_tasks", "prompts_dir", "backend_option")


def sha256_of(path: Path) -> str:
    """Of a file, or of a folder's data files (an hf export) in name order: not its card or
    journal, which are written beside the data."""
    digest = hashlib.sha256()
    files = (
        sorted(
            p for p in path.rglob("*") if p.is_file() and p.name not in ("README.md", JOURNAL_FILE)
        )
        if path.is_dir()
        else [path]
    )
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _no_secrets(value: Any) -> Any:
    """URLs keep no user:password and no query string (where some services put a key);
    everything else is options (keys are named by their variable, never held)."""
    if isinstance(value, str):
        value = re.sub(r"(https?://)[^/@\s]+@", r"\1", value)
        return re.sub(r"(https?://[^\s?]*)\?\S*", r"\1", value)
    if isinstance(value, list):
        return [_no_secrets(v) for v in value]
    if isinstance(value, dict):
        return {k: _no_secrets(v) for k, v in value.items()}
    return value


class Generated(BaseModel):
    backend: str
    model: str
    chat: bool
    status: str
    config: dict[str, Any]
    seed_file: str  # its name, and the hash that identifies it
    seed_file_sha256: str
    versions: dict[str, str] = Field(default_factory=dict)
    templates_sha256: dict[str, str] = Field(default_factory=dict)
    journal_sha256: str | None = None


class CardLineage(BaseModel):
    """The `selfinstruct:` block of a card's YAML header."""

    version: str
    data_file: str  # beside the card; "." when the card is inside the data folder (hf)
    data_sha256: str
    export: dict[str, Any]
    generated: Generated | None = None
    journal_file: str | None = None  # beside the card, when exported with --with-journal
    # Steps between the run and the data that a rebuild does not make again (a filter pass,
    # a review's drops and edits): their names, so a rebuild says why it cannot.
    not_rebuilt: list[str] = Field(default_factory=list)


def card_block(
    version: str,
    data: Path,
    export_settings: dict[str, Any],
    manifest: Any,
    run_dir: Path | None,
    journal_file: str | None,
    not_rebuilt: list[str],
) -> dict[str, Any]:
    """The block a card carries: everything needed to make its data again."""
    generated = None
    if manifest is not None:
        config = {k: v for k, v in _no_secrets(manifest.config).items() if k not in _LEFT_OUT}
        lineage = manifest.lineage
        journal = run_dir / "requests.jsonl" if run_dir is not None else None
        generated = Generated(
            backend=manifest.backend,
            model=manifest.model,
            chat=manifest.chat,
            status=manifest.status,
            config=config,
            seed_file=Path(str(manifest.config.get("seed_tasks", "?"))).name,
            seed_file_sha256=manifest.seed_file_sha256,
            versions=lineage.versions if lineage else {},
            templates_sha256=lineage.templates_sha256 if lineage else {},
            journal_sha256=sha256_of(journal) if journal is not None and journal.exists() else None,
        )
    block = CardLineage(
        version=version,
        data_file="." if export_settings.get("format") == "hf" else data.name,
        not_rebuilt=not_rebuilt,
        data_sha256=sha256_of(data),
        export={k: export_settings[k] for k in EXPORT_FIELDS if k in export_settings},
        generated=generated,
        journal_file=journal_file,
    )
    return block.model_dump(mode="json", exclude_none=True)


def read_card(folder: Path) -> CardLineage:
    card = folder / "README.md" if folder.is_dir() else folder
    try:
        text = card.read_text(encoding="utf-8")
        header = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    except (OSError, IndexError, yaml.YAMLError) as exc:
        raise ConfigError(f"{card}: not a dataset card with a YAML header ({exc})") from None
    if not isinstance(header, dict) or "selfinstruct" not in header:
        raise ConfigError(
            f"{card}: the card has no selfinstruct block; only cards written by "
            "selfinstruct export (0.1 or later) can rebuild their data"
        )
    return CardLineage.model_validate(header["selfinstruct"])


class Rebuild(BaseModel):
    job_file: str
    run_dir: str
    data_edited: bool
    replay: bool = False  # the journal is in place: the job runs without the model
    reproduced: bool | None = None  # None: not run
    data_file: str | None = None
    message: str = ""


def prepare_rebuild(
    folder: Path, run_dir: Path, *, seed_tasks: Path | None, accept_edited: bool
) -> Rebuild:
    """Write the job that makes the card's data, and with the journal beside the card, put it
    where the job's generate stage will answer from it. The caller runs the job (`run JOB`),
    then `check_rebuilt`."""
    card = read_card(folder)
    base = folder if folder.is_dir() else folder.parent
    data = base / card.data_file if card.data_file != "." else base
    if not data.exists():
        raise SelfInstructError(f"{data}: the card's data file is not beside it")
    edited = sha256_of(data) != card.data_sha256
    if edited and not accept_edited:
        raise SelfInstructError(
            f"{data} was edited after export: its sha256 is not the {card.data_sha256[:12]}... "
            "the card records, so the card does not describe it. Rebuild the original with "
            "--accept-edited (the rebuilt data is compared with the card's hash, not this file)"
        )
    generated = card.generated
    if generated is None:
        raise SelfInstructError(
            f"{folder}: the data was not generated by selfinstruct (exported from a file), so "
            "there is no run to make again"
        )
    if card.not_rebuilt:
        raise SelfInstructError(
            f"{folder}: between the run and this data came {' and '.join(card.not_rebuilt)}, "
            "which a rebuild does not make again; export the run directly to get a card that "
            "can be rebuilt"
        )
    _check_templates(generated)
    seeds = _seed_file(generated, seed_tasks)
    job: dict[str, Any] = {
        "run_dir": str(run_dir),
        "generate": {**generated.config, "seed_tasks": str(seeds)},
        "export": {**card.export, "card": True},
    }
    journal = base / card.journal_file if card.journal_file else None
    replay = journal is not None and journal.exists()
    from selfinstruct.backends.registry import registry
    from selfinstruct.config import BackendOptions

    # Only the options the backend that runs the job reads (a run's manifest holds them all,
    # and a job that set another backend's options would be refused). From the journal, none.
    own = registry()[generated.backend].options.model_fields if not replay else {}
    for name in BackendOptions.model_fields:
        if name not in own:
            job["generate"].pop(name, None)
    if replay:
        job["generate"].update(backend="journal", model=generated.model, chat=generated.chat)
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir.parent / f"{run_dir.name}.job.yaml"
    job_file.write_text(yaml.safe_dump(job, sort_keys=False, allow_unicode=True))
    result = Rebuild(job_file=str(job_file), run_dir=str(run_dir), data_edited=edited)
    if not replay:
        result.message = (
            f"job written to {job_file}; no journal beside the card (export --with-journal), so "
            "running it asks the model again"
        )
        return result
    assert journal is not None
    target = run_dir / "generate"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(journal, target / "requests.jsonl")
    result.replay = True
    return result


def check_rebuilt(folder: Path, result: Rebuild) -> Rebuild:
    """Is the data the rebuilt job exported the card's, byte for byte?"""
    card = read_card(folder)
    exported = (Path(result.run_dir) / "export").iterdir()
    made = next((p for p in exported if p.name.startswith("train")), None)
    if made is None:
        raise SelfInstructError(f"{result.run_dir}: the rebuilt job exported nothing")
    result.data_file = str(made)
    result.reproduced = sha256_of(made) == card.data_sha256
    result.message = (
        f"{made}: byte for byte the card's data (sha256 {card.data_sha256[:12]}...)"
        if result.reproduced
        else f"{made}: NOT the card's data (sha256 {sha256_of(made)[:12]}... against "
        f"{card.data_sha256[:12]}...): another selfinstruct version or seed file?"
    )
    return result


def _check_templates(generated: Generated) -> None:
    """The shipped prompt templates must be the ones that made the data: another selfinstruct's
    templates ask other prompts, and the journal would not answer them."""
    from selfinstruct.stages import load_templates

    here = load_templates().digests()
    differ = sorted(k for k, v in generated.templates_sha256.items() if here.get(k) != v)
    if differ:
        made_with = generated.versions.get("selfinstruct", "?")
        raise SelfInstructError(
            f"the prompt templates that made this data differ from this selfinstruct's "
            f"({', '.join(differ)}): made with selfinstruct {made_with} or with --prompts-dir; "
            "rebuild with that version"
        )


def _seed_file(generated: Generated, given: Path | None) -> Path:
    """The seed file the run used: the one given, or the one shipped with selfinstruct, if its
    hash is the card's."""
    from selfinstruct.config import SEED_TASKS

    candidates = [given] if given is not None else [SEED_TASKS]
    for path in candidates:
        if path is not None and path.exists():
            if sha256_of(path) == generated.seed_file_sha256:
                return path
            raise SelfInstructError(
                f"{path} is not the seed file the card names ({generated.seed_file}, sha256 "
                f"{generated.seed_file_sha256[:12]}...); pass that file with --seed-tasks"
            )
    raise SelfInstructError(
        f"the seed file {generated.seed_file} (sha256 {generated.seed_file_sha256[:12]}...) is "
        "needed; pass it with --seed-tasks"
    )
