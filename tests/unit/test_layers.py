"""The import graph of the package: no cycles (imports inside functions counted), and the layers kept.

The graph is read from the sources (ast), not by importing them: every ``import`` and ``from ... import``
of a first-party module, at module level or inside a function, is an edge.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest's own dependency there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
ROOT_PACKAGE = "pijobs"


def _package_dirs() -> dict[str, Path]:
    """pyproject's package-dir: the installed name of each top-level folder."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {ROOT_PACKAGE: REPO / ROOT_PACKAGE}
    dirs.update({name: REPO / folder for name, folder in config["package-dir"].items()})
    return dirs


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    dirs = _package_dirs()
    for package, folder in dirs.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if any(f"{package}.{'.'.join(parts[:n])}" in dirs for n in range(1, len(parts))):
                continue  # a folder mapped on its own (pijobs/shared is not a folder of pijobs/)
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool
    text: str


def _resolve(name: str) -> str | None:
    """The first-party module an imported name is (or lives in)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> Iterator[Import]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # only for the type checker: no import at run time
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in child.names] or [base]
                names = [n if _resolve(n) == n else base for n in names]
            for name in names:
                target = _resolve(name)
                if target is not None and target != module:
                    text = lines[child.lineno - 1].strip()
                    yield Import(module, target, child.lineno, in_function, text)
            yield from visit(child, nested)

    yield from visit(tree, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in IMPORTS:
        graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return found


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read() -> None:
    """The checks below would pass on an empty graph: make sure they see the package."""
    assert {"pijobs.shared.status", "pijobs.worker.job", "pijobs.api_handler.routes"} <= MODULES.keys()
    assert any(i.target == "pijobs.shared.status" for i in IMPORTS)
    assert any(i.in_function for i in IMPORTS)


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_the_runtime_packages_import_only_the_shared_package() -> None:
    """What runs in the Lambdas and on the instances: each of them, plus pijobs.shared, and nothing else."""
    runtime = ("pijobs.shared", "pijobs.api_handler", "pijobs.dispatcher", "pijobs.worker")
    wrong = [
        f"{i.source}:{i.line} {i.text}"
        for i in IMPORTS
        for own in runtime
        if _is_within(i.source, own)
        and not (
            _is_within(i.target, own) or _is_within(i.target, "pijobs.shared") or i.target == ROOT_PACKAGE
        )
    ]
    assert wrong == []


def test_the_local_stack_imports_no_command_line_module() -> None:
    command_line = {m for m in MODULES if m.startswith("pijobs.") and not _is_within(m, "pijobs.local")}
    command_line -= {m for m in MODULES if any(_is_within(m, p) for p in LIBRARY)}
    wrong = [
        f"{i.source}:{i.line} {i.text}"
        for i in IMPORTS
        if _is_within(i.source, "pijobs.local") and i.target in command_line
    ]
    assert wrong == []


# What the embedded stack may build on besides the runtime: library modules with no argument parsing.
LIBRARY = (
    "pijobs.shared",
    "pijobs.api_handler",
    "pijobs.dispatcher",
    "pijobs.worker",
    "pijobs.functions",
    "pijobs.deploy",
    "pijobs.keys",
    "pijobs.client",
    "pijobs.customer",
    "pijobs.errors",
    "pijobs.ops",
)


def test_a_plug_in_needs_only_the_plug_in_api() -> None:
    """The test plug-in and the guide's code import pijobs.functions and no other pijobs module (but the
    embedded stack, which the guide uses to test a function end to end)."""
    plugin = REPO / "tests" / "plugins" / "wordcount"
    lines = [
        line
        for path in plugin.rglob("*.py")
        if "build" not in path.parts
        for line in path.read_text().splitlines()
    ]
    guide = (REPO / "docs" / "functions.md").read_text()
    lines += [
        line for block in guide.split("```python")[1:] for line in block.split("```", 1)[0].splitlines()
    ]
    imported = {
        match.group(1) for line in lines if (match := re.match(r"\s*(?:from|import) (pijobs\S*)", line))
    }
    assert imported == {"pijobs.functions", "pijobs.local.stack"}
    assert any("pijobs.functions" in line for line in (plugin / "pijobs_wordcount" / "__init__.py").open())


def test_the_plug_in_api_builds_on_the_shared_package_alone() -> None:
    wrong = [f"{i.line} {i.text}" for i in IMPORTS if i.source == "pijobs.functions"]
    assert wrong and all("pijobs.shared" in line for line in wrong)


def test_an_import_inside_a_function_says_why() -> None:
    """Imports inside functions hid the cycles: the few left are there for start-up time or an optional
    extra, each saying so with a ``# lazy:`` comment on its line or the line before."""
    unexplained = []
    for imp in IMPORTS:
        if not imp.in_function:
            continue
        lines = MODULES[imp.source].read_text().splitlines()
        here, before = lines[imp.line - 1], lines[imp.line - 2] if imp.line > 1 else ""
        if "# lazy:" not in here and "# lazy:" not in before:
            unexplained.append(f"{imp.source}:{imp.line} {imp.text}")
    assert unexplained == []
