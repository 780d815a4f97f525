"""The shape of the package: one room per purpose, configs in one place, no private reach-ins."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "selfinstruct"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("selfinstruct"):
                offenders += [
                    f"{path.relative_to(REPO)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert offenders == []


def test_every_command_config_lives_in_the_config_package() -> None:
    outside = []
    for path in _modules():
        if path.parent.name == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                outside.append(f"{path.relative_to(REPO)}: {node.name}")
    assert outside == []


def test_one_atomic_writer() -> None:
    # Temp-file-and-rename is written once, in atomic.py; everything else calls it.
    users = [
        str(path.relative_to(REPO))
        for path in _modules()
        if ".tmp" in path.read_text(encoding="utf-8") and path.name != "atomic.py"
    ]
    assert users == []


def test_data_ships_inside_the_package() -> None:
    data = PACKAGE / "data"
    assert (data / "prompts" / "instructions.txt").is_file()
    assert (data / "seed_tasks" / "seed_tasks.jsonl").is_file()
    assert (data / "eval_tasks.jsonl").is_file()
    # The top-level folders the repository shows are the same files, not copies.
    assert (REPO / "prompts").resolve() == (data / "prompts").resolve()
    assert (REPO / "seed_tasks").resolve() == (data / "seed_tasks").resolve()
    # No code path reads the checkout around the package (../shared and the like).
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        assert "shared" + "/data" not in text and '"shared"' not in text, path


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("selfinstruct"):
            base = node.module or ""
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.add(name if name in modules else base)
    return found & modules


def test_no_import_cycle() -> None:
    """Nothing imports, directly or through others, a module that imports it (imports inside
    functions count: they only hide a cycle)."""
    paths = {_module_name(p): p for p in _modules()}
    graph = {name: _imported(path, set(paths)) - {name} for name, path in paths.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _option_defaults() -> dict[str, list[tuple[str, object, str]]]:
    """Every option: name -> (declaring class, default, help) for each class that declares it."""
    import inspect

    from pydantic import BaseModel

    from selfinstruct.config import backends, commands

    found: dict[str, list[tuple[str, object, str]]] = {}
    classes = {
        v
        for module in (backends, commands)
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, BaseModel)
    }
    for cls in classes:
        for name in inspect.get_annotations(cls):
            field = cls.model_fields.get(name)
            if field is not None:
                default = field.get_default(call_default_factory=True)
                found.setdefault(name, []).append((cls.__name__, default, field.description or ""))
    return found


def test_no_default_is_written_twice() -> None:
    """An option's default lives in its declaration alone: no function takes an option's name
    with a default of its own (where the config leaves the choice to the code, with None, the
    code is the one place it is made), and no option is declared twice, word for word."""
    from pydantic import BaseModel

    options = _option_defaults()
    decided = {
        name
        for name, decls in options.items()
        if any(d is not None and not isinstance(d, BaseModel) for _, d, _ in decls)
    }
    shadows = []
    for path in _modules():
        if path.parent.name == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(
                zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
            )
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
            shadows += [
                f"{path.relative_to(REPO)}:{node.lineno} {node.name}({arg.arg}=...)"
                for arg, default in pairs
                if arg.arg in decided
                and not (isinstance(default, ast.Constant) and default.value is None)
            ]
    assert shadows == []
    copies = [
        f"{name}: {a} and {b}"
        for name, decls in options.items()
        for i, (a, default_a, help_a) in enumerate(decls)
        for b, default_b, help_b in decls[i + 1 :]
        if default_a == default_b and help_a == help_b
    ]
    assert copies == []


def test_the_architecture_map_names_every_module_and_only_those() -> None:
    """docs/architecture.md lists the package's rooms: every module of the package is on the
    map, and every module the map names exists."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("```\nselfinstruct/", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"\b([a-z_0-9]+\.py)\b", block))
    modules = {p.name for p in (REPO / "selfinstruct").rglob("*.py")}
    missing = sorted(modules - named - {"__init__.py"})
    assert not missing, f"modules not on the map: {missing}"
    assert not sorted(named - modules), f"on the map but not in the package: {named - modules}"
    folders = {
        p.name for p in (REPO / "selfinstruct").iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    assert all(f"{folder}/" in block for folder in folders), folders
