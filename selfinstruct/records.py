"""The records every stage reads and writes, and readers for the instruction formats people have.

A seed task and a generated task share one schema (`Task`), so any output file can be the seed
file of the next run. Readers accept:

- Self-Instruct task JSONL (`id, name, instruction, instances[{input, output}], is_classification`),
- Self-Instruct `machine_generated_instructions.jsonl` (`instruction, most_similar, ...`),
- Alpaca JSON (a list of `instruction`/`input`/`output`) or the same rows as JSONL,
- chat `messages` JSONL (the first user turn is the instruction, the reply its output),
- any of these gzip-compressed (`.gz`).

A bad row is reported with its file and line; with `skip_bad_rows` it is yielded as a `BadRow`
so that callers can count it and keep it in their rejected file instead of losing it.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfinstruct.atomic import atomic_write
from selfinstruct.errors import InputError


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = ""
    output: str


class Task(BaseModel):
    # Unknown fields of an input row are kept, so a filter pass never drops data it does not know.
    model_config = ConfigDict(extra="allow")

    id: str
    instruction: str
    instances: list[Instance] = Field(default_factory=list)
    is_classification: bool | None = None
    source: Literal["seed", "machine"] = "seed"
    name: str | None = None
    round: int | None = None
    request_id: str | None = None
    most_similar: dict[str, float] = Field(default_factory=dict)
    avg_similarity_score: float | None = None
    model: str | None = None


class Rejected(BaseModel):
    """A row some stage dropped, with the reason code and whatever explains the decision."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    reason: str
    text: str
    detail: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    origin: str | None = None

    @classmethod
    def of(
        cls,
        stage: str,
        reason: str,
        text: str,
        id: str | None = None,
        *,
        origin: str | None = None,
        detail: dict[str, Any] | None = None,
        **more: Any,
    ) -> Rejected:
        """The one way anything records what it dropped: where, why, what, and the detail
        (`detail`, and any further keyword arguments, merged)."""
        merged = {**(detail or {}), **more}
        return cls(stage=stage, reason=reason, text=text, detail=merged, id=id, origin=origin)


@dataclass(frozen=True, slots=True)
class Row:
    """One parsed input row: the task, where it came from and the object as it was in the file."""

    task: Task
    line: int
    origin: str
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row that could not be read; `text` keeps it (decoded leniently) for the record."""

    line: int
    origin: str
    message: str
    text: str
    unit: Literal["line", "item"] = "line"  # JSON-list files count items, not lines


def _open_bytes(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _read_all_bytes(path: Path) -> bytes:
    try:
        with _open_bytes(path) as fh:
            return fh.read()
    except FileNotFoundError:
        raise InputError(path, "no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory; give an instruction file") from None
    except PermissionError:
        raise InputError(path, "permission denied; check the file's permissions") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputError(path, f"not a readable gzip file ({exc})") from None


def _is_json_list(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"["


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "row"
        parts.append(f"field '{loc}': {err['msg']}")
    return "; ".join(parts)


def _as_str_id(value: Any) -> Any:
    # Integer ids are common in hand-made files; they name the row just as well as strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def row_to_task(obj: Any, default_id: str) -> Task:
    """Map one decoded JSON object of any supported shape to a `Task` (raises ValueError)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj and "instruction" not in obj:
        return _chat_row_to_task(obj, default_id)
    if "instruction" not in obj:
        raise ValueError("missing field 'instruction'")
    data = dict(obj)
    data["id"] = _as_str_id(data.get("id", default_id))
    if "instances" not in data and ("output" in data or "input" in data):
        # Alpaca row: one instance per row. Keep `input`/`output` out of the extra fields.
        data["instances"] = [{"input": data.pop("input", ""), "output": data.pop("output", None)}]
    if "most_similar" in data and "source" not in data:
        data["source"] = "machine"  # the original bootstrap script's output
    if "request_idx" in data and "request_id" not in data:
        data["request_id"] = str(data.pop("request_idx"))
    return Task.model_validate(data)


def _chat_row_to_task(obj: dict[str, Any], default_id: str) -> Task:
    messages = obj["messages"]
    if not isinstance(messages, list):
        raise ValueError("field 'messages' must be a list of {role, content} objects")
    user = next(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), None
    )
    if user is None:
        raise ValueError("field 'messages' has no user turn to use as the instruction")
    instruction = messages[user].get("content")
    if not isinstance(instruction, str):
        raise ValueError(f"field 'messages.{user}.content' must be a string")
    reply = next(
        (m for m in messages[user + 1 :] if isinstance(m, dict) and m.get("role") == "assistant"),
        None,
    )
    instances = []
    if reply is not None:
        if not isinstance(reply.get("content"), str):
            raise ValueError("the assistant turn's 'content' must be a string")
        instances.append({"input": "", "output": reply["content"]})
    extra = {k: v for k, v in obj.items() if k not in {"messages", "id"}}
    return Task.model_validate(
        {
            "id": _as_str_id(obj.get("id", default_id)),
            "instruction": instruction,
            "instances": instances,
            "messages": messages,
            **extra,
        }
    )


def _parse(
    obj: Any, path: Path, line: int, text: str, unit: Literal["line", "item"] = "line"
) -> Row | BadRow:
    origin = f"{path}:{line}" if unit == "line" else f"{path}#{line}"
    try:
        task = row_to_task(obj, default_id=f"{path.name.split('.')[0]}-{line}")
    except ValidationError as exc:
        return BadRow(line, origin, _validation_message(exc), text, unit)
    except ValueError as exc:
        return BadRow(line, origin, str(exc), text, unit)
    return Row(task, line, origin, obj)


def iter_rows(path: str | os.PathLike[str]) -> Iterator[Row | BadRow]:
    """Yield every row of an instruction file as a `Row` or, when it cannot be read, a `BadRow`.

    Errors that make the whole file unreadable (missing file, broken JSON list) raise InputError.
    """
    path = Path(path)
    data = _read_all_bytes(path)
    if _is_json_list(data):
        yield from _iter_json_list(path, data)
        return
    # Split on b"\n" only: instructions may hold U+2028/U+2029, which str.splitlines would cut.
    for number, raw_line in enumerate(data.split(b"\n"), start=1):
        if number == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
            raw_line = raw_line[3:]
        if not raw_line.strip():
            continue
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRow(
                number,
                f"{path}:{number}",
                f"not valid UTF-8 ({exc.reason} at byte {exc.start}); re-encode the file as UTF-8",
                raw_line.decode("utf-8", "replace"),
            )
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield BadRow(
                number,
                f"{path}:{number}",
                f"not valid JSON ({exc.msg} at column {exc.colno})",
                text,
            )
            continue
        yield _parse(obj, path, number, text)


def _iter_json_list(path: Path, data: bytes) -> Iterator[Row | BadRow]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(path, "not valid UTF-8; re-encode the file as UTF-8", line) from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            path, f"not valid JSON ({exc.msg} at column {exc.colno})", exc.lineno
        ) from None
    for index, obj in enumerate(items, start=1):
        # For a JSON list the "line" is the item's position, which is what a user can look up.
        yield _parse(obj, path, index, json.dumps(obj, ensure_ascii=False), unit="item")


def read_rows(path: str | os.PathLike[str], *, skip_bad_rows: bool) -> Iterator[Row | BadRow]:
    """Like `iter_rows`, but a bad row raises InputError unless `skip_bad_rows` is set.

    A repeated task id is a bad row too: ids name tasks in rejected.jsonl and in provenance.
    """
    first_seen: dict[str, int] = {}
    for item in _with_duplicates_marked(iter_rows(path), first_seen):
        if isinstance(item, BadRow) and not skip_bad_rows:
            hint = "(use --skip-bad-rows to skip and count such rows)"
            if item.unit == "item":
                raise InputError(path, f"item {item.line}: {item.message} {hint}")
            raise InputError(path, f"{item.message} {hint}", item.line)
        yield item


def _with_duplicates_marked(
    items: Iterator[Row | BadRow], first_seen: dict[str, int]
) -> Iterator[Row | BadRow]:
    for item in items:
        if isinstance(item, Row):
            first = first_seen.setdefault(item.task.id, item.line)
            if first != item.line:
                unit = "item" if "#" in item.origin.rsplit("/", 1)[-1] else "line"
                yield BadRow(
                    item.line,
                    item.origin,
                    f"duplicate id {item.task.id!r} (first at {unit} {first})",
                    json.dumps(item.raw, ensure_ascii=False),
                    unit,
                )
                continue
        yield item


def read_tasks(path: str | os.PathLike[str]) -> list[Task]:
    """Read every task of a file; any bad row raises InputError naming file and line."""
    return [item.task for item in read_rows(path, skip_bad_rows=False) if isinstance(item, Row)]


def write_jsonl(path: str | os.PathLike[str], records: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write records to `path` atomically (temp file + rename); returns the number written."""
    count = 0
    with atomic_write(Path(path)) as fh:
        for record in records:
            fh.write(dump_line(record))
            count += 1
    return count


def dump_line(record: BaseModel | dict[str, Any]) -> str:
    """One JSONL line; `None` fields of our own records are left out to keep files readable."""
    if isinstance(record, BaseModel):
        data = record.model_dump(mode="json", exclude_none=True)
    else:
        data = record
    return json.dumps(data, ensure_ascii=False) + "\n"


def sample_instructions(path: str | os.PathLike[str], limit: int) -> list[str]:
    """Up to `limit` instructions spread evenly over the file; unreadable rows are skipped.

    Used to estimate token frequencies before a streaming pass, so it must be cheap: it reads
    raw lines and parses only the sampled ones.
    """
    path = Path(path)
    data = _read_all_bytes(path)
    if _is_json_list(data):
        try:
            items: list[Any] = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return []
        picked: list[Any] = items[:: max(1, len(items) // max(1, limit))][:limit]
    else:
        lines = [line for line in data.split(b"\n") if line.strip()]
        picked = []
        for line in lines[:: max(1, len(lines) // max(1, limit))][:limit]:
            try:
                picked.append(json.loads(line.decode("utf-8-sig")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
    texts = []
    for obj in picked:
        try:
            texts.append(row_to_task(obj, "sample").instruction)
        except (ValueError, ValidationError):
            continue
    return texts
