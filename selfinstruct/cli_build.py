"""Build typer commands from the pydantic configs, so each option is declared once.

Every field of a command's config becomes a flag (or an argument): its name, type, help and the
default it shows come from the field; nested configs are flattened with their `prefix`. Flags
default to "not given", so the config's own default (or a config file's value) applies unless
the user typed the flag: defaults < config file < flags. Bounds are checked by pydantic, once,
with the same messages a config file gets.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import click
import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.core import TyperCommand


@dataclass(frozen=True)
class Spec:
    """One config field as it appears on the command line."""

    path: tuple[str, ...]  # where the value goes in the config ("rules", "min_words")
    param: str  # the Python name typer passes it under
    flags: tuple[str, ...]
    annotation: Any
    help: str
    metavar: str | None
    positional: bool
    required: bool
    clear_flag: str | None  # --no-NAME for a clearable list
    group: str  # the heading it is listed under in --help


def _extra(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


def _bounds(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for cls, attr, sign in (
            (annotated_types.Ge, "ge", ">="),
            (annotated_types.Gt, "gt", ">"),
            (annotated_types.Le, "le", "<="),
            (annotated_types.Lt, "lt", "<"),
        ):
            if isinstance(item, cls):
                words.append(f"{sign}{getattr(item, attr)}")
    return " ".join(words)


def _metavar(kind: Any) -> str | None:
    if typing.get_origin(kind) is Literal:
        return "|".join(str(a) for a in typing.get_args(kind))
    return {int: "INT", float: "NUMBER", str: "TEXT", Path: "PATH"}.get(kind)


def _heading(model: type[BaseModel], name: str) -> str:
    """The heading of the options class that declares `name` (a subclass's own, or a base's)."""
    for cls in model.__mro__:
        if name in inspect.get_annotations(cls):
            return str(getattr(cls, "heading", "Options"))
    return "Options"


def field_specs(
    model: type[BaseModel],
    prefix: str = "",
    path: tuple[str, ...] = (),
    group: str | None = None,
) -> list[Spec]:
    """The command-line form of every option of `model`, nested configs flattened."""
    specs: list[Spec] = []
    for name, field in model.model_fields.items():
        extra = _extra(field)
        if extra.get("cli") is False:
            continue
        kind = _strip_optional(field.annotation)
        heading = extra.get("group") or group or _heading(model, name)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            nested = extra.get("group") or group or getattr(kind, "heading", None)
            specs += field_specs(
                kind, prefix + extra.get("prefix", f"{name}-"), (*path, name), nested
            )
            continue
        default = field.get_default(call_default_factory=True)
        required = field.is_required()
        help_text = field.description or ""
        # A None default means "decided elsewhere", and the help says how; a help that names
        # its default in words already shows it. Either way the default is said once.
        said = "(default:" in help_text or default in (None, [], ())
        if not required and not said and not extra.get("positional"):
            help_text += f" [default: {_shown(default)}]"
        if required and not extra.get("positional"):
            help_text += " [required]"
        if _bounds(field):
            help_text += f" [{_bounds(field)}]"
        long = extra.get("flag") or f"--{prefix}{name.replace('_', '-')}"
        flags = (long, extra["short"]) if "short" in extra else (long,)
        is_list = typing.get_origin(kind) is list
        item = typing.get_args(kind)[0] if is_list else kind
        if kind is bool and "/" not in long:
            flags = (f"{long}/--no-{long[2:]}", *flags[1:])
        if is_list:
            help_text += " (repeatable)"
        specs.append(
            Spec(
                path=(*path, name),
                param="_".join((*path, name)),
                flags=flags,
                # typer takes no list of Literal; the choices are checked by pydantic.
                annotation=list[str if typing.get_origin(item) is Literal else item]
                if is_list
                else kind,
                help=help_text,
                metavar=None if kind is bool else _metavar(item),
                positional=bool(extra.get("positional")),
                required=required,
                clear_flag=f"--no-{prefix}{name.replace('_', '-')}"
                if extra.get("clearable")
                else None,
                group=heading,
            )
        )
    return specs


def _parameter(spec: Spec) -> list[inspect.Parameter]:
    if spec.positional:
        info: Any = typer.Argument(
            metavar=spec.path[-1].upper(), help=spec.help, show_default=False
        )
        optional = {} if spec.required else {"default": None}
        annotation = spec.annotation if spec.required else spec.annotation | None
        return [
            inspect.Parameter(
                spec.param,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[annotation, info],
                **optional,
            )
        ]
    info = typer.Option(
        *spec.flags,
        help=spec.help,
        metavar=spec.metavar,
        show_default=False,
        rich_help_panel=spec.group,
    )
    params = [
        inspect.Parameter(
            spec.param,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[spec.annotation | None, info],
        )
    ]
    if spec.clear_flag:
        clear = typer.Option(
            spec.clear_flag, help=f"switch off {spec.flags[0]} entirely", rich_help_panel=spec.group
        )
        params.append(
            inspect.Parameter(
                f"{spec.param}__clear",
                inspect.Parameter.KEYWORD_ONLY,
                default=False,
                annotation=Annotated[bool, clear],
            )
        )
    return params


def given_options(specs: list[Spec], values: dict[str, Any]) -> dict[str, Any]:
    """The options the user typed, as a nested dict for `build_config`."""
    flags: dict[str, Any] = {}
    for spec in specs:
        value = values.get(spec.param)
        if values.get(f"{spec.param}__clear"):
            value = []
        if value is None:
            continue
        target = flags
        for key in spec.path[:-1]:
            target = target.setdefault(key, {})
        target[spec.path[-1]] = value
    return flags


def add_command(
    app: typer.Typer,
    name: str,
    model: type[BaseModel],
    handler: Callable[..., None],
    extras: list[inspect.Parameter] = (),  # type: ignore[assignment]
) -> None:
    """Register `handler(options, **extras)` as command `name`, with `model`'s fields as
    flags. `options` holds only what the user typed; `extras` are command-line-only switches
    (--config, --quiet) that are not options of the config."""
    # Arguments first (a config that inherits options may declare its argument after them).
    specs = sorted(field_specs(model), key=lambda spec: not spec.positional)
    params = [p for spec in specs for p in _parameter(spec)]
    extra_names = [p.name for p in extras]
    taken = {p.name for p in params}
    clash = taken.intersection(extra_names)
    if clash:
        raise RuntimeError(f"{name}: command-line switches clash with options: {clash}")

    def command(**values: Any) -> None:
        handler(given_options(specs, values), **{k: values[k] for k in extra_names})

    command.__signature__ = inspect.Signature([*params, *extras])  # type: ignore[attr-defined]
    command.__doc__ = handler.__doc__
    app.command(name=name, cls=GroupedCommand)(command)


# Headings in the order --help lists them; any other heading follows, in order of appearance.
HEADINGS = (
    "Run",
    "Backend",
    "Backend: openai",
    "Backend: openai-batch",
    "Backend: local and vllm",
    "Backend: local",
    "Backend: vllm",
    "Method",
    "Sampling",
    "Filters",
    "Judge",
    "Budgets",
    "Options",
)


class GroupedCommand(TyperCommand):
    """Plain `--help` (no rich boxes), with the options listed under their headings."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        arguments, groups = [], {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
                continue
            heading = getattr(param, "rich_help_panel", None) or "Options"
            groups.setdefault(heading, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        order = {h: k for k, h in enumerate(HEADINGS)}
        for heading in sorted(groups, key=lambda h: order.get(h, len(order))):
            with formatter.section(heading if heading == "Options" else f"{heading} options"):
                formatter.write_dl(groups[heading])


def switch(
    name: str, flags: tuple[str, ...], help: str, annotation: Any = bool, metavar: str | None = None
) -> inspect.Parameter:
    """A command-line-only switch for `add_command`'s extras."""
    default = False if annotation is bool else None
    info = typer.Option(*flags, help=help, metavar=metavar, show_default=False)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, info],
    )
