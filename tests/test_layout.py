"""The shape of the package: one room per purpose, configs in one place, no private reach-ins."""

from __future__ import annotations

import ast
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
