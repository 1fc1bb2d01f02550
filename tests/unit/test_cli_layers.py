"""The command line is a thin layer: parsing and printing in ``pijobs.cli``, the work in library modules a
Python caller uses without it. The library and the local stack import nothing of the command line (no
``pijobs.cli``, no argparse, no rich), imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pijobs

PACKAGE = Path(pijobs.__file__).parent
LIBRARY = ["client.py", "customer.py", "deploy.py", "errors.py", "keys.py", "ops.py"]
CLI_ONLY = ("pijobs.cli", "argparse", "rich")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_cli(name: str) -> bool:
    return name == "pijobs.cli" or name.startswith("pijobs.cli.")


def cli_imports(path: Path) -> list[str]:
    return sorted(n for n in imported(path) if any(n == c or n.startswith(c + ".") for c in CLI_ONLY))


@pytest.mark.parametrize("name", LIBRARY)
def test_the_library_imports_nothing_of_the_command_line(name: str) -> None:
    assert cli_imports(PACKAGE / name) == []


def test_the_local_stack_imports_nothing_of_the_command_line() -> None:
    found = {p.name: cli_imports(p) for p in (PACKAGE / "local").glob("*.py")}
    # forkserver is a process of its own with its own small command line (python -m ...)
    assert {name: names for name, names in found.items() if names and name != "forkserver.py"} == {}
    assert not any(_is_cli(n) for n in found.get("forkserver.py", []))


def test_every_command_module_is_imported_by_the_command_line_only() -> None:
    users = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if "cli" not in p.relative_to(PACKAGE).parts and any(map(_is_cli, imported(p)))
    }
    assert users == set()
