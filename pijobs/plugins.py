"""Checking a business-function plug-in before it is packaged: ``pijobs functions check PATH``.

``PATH`` is the plug-in's distribution (a folder with its ``pyproject.toml``, whose ``pijobs.functions`` entry
points name the classes) or its package folder. Each function is loaded as the registry loads it at start-up
(its model, names, instance types, root volume, stack parameters: ``check_function``), its job template (the
platform's rendering, or its own) is read against the platform's contract (the parameters the dispatcher
sets, the resource types it declares) and the job template's invariants, and cfn-lint runs over it where it
is installed. A Python caller gets the problems; the command prints them.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from pijobs import job_template
from pijobs.errors import UsageError
from pijobs.shared.functions import (
    ENTRY_POINT_GROUP,
    PLATFORM_PARAMETERS,
    BusinessFunction,
    FunctionRegistryError,
    check_function,
)


@dataclass
class CheckedFunction:
    name: str
    version: str
    problems: list[str] = field(default_factory=list)
    lint: str = ""  # what cfn-lint said, or why it did not run


def check_plugin(path: Path, *, lint: bool = True) -> list[CheckedFunction]:
    """Every function the plug-in at ``path`` declares, with what is wrong with each (empty: ready)."""
    classes = _function_classes(path)
    if not classes:
        raise UsageError(f"{path} declares no pijobs business function ({ENTRY_POINT_GROUP} entry point)")
    checked = []
    for where, cls in classes:
        try:
            function = cls()
            check_function(function, where)
        except (FunctionRegistryError, TypeError) as exc:
            checked.append(
                CheckedFunction(getattr(cls, "name", "?"), getattr(cls, "version", "?"), [str(exc)])
            )
            continue
        result = CheckedFunction(function.name, function.version, template_problems(function))
        if lint and not result.problems:
            result.lint = _cfn_lint(function)
            if result.lint and not result.lint.startswith("skipped"):
                result.problems.append(f"cfn-lint: {result.lint}")
        checked.append(result)
    return checked


def template_problems(function: BusinessFunction) -> list[str]:
    """The job template against the platform's contract: it declares the parameters the dispatcher sets and
    no other required one, creates only the resource types the function declares, and keeps the job
    template's invariants (a rendered one does by construction; an own one is read as shipped)."""
    try:
        template = job_template.load(function)
    except ImportError:  # an own template needs PyYAML: the [local] extra, or cfn-lint, brings it
        return ["its template was not read: PyYAML is not installed (pip install 'pijobs[local]')"]
    except (OSError, ValueError) as exc:
        return [f"its template cannot be read: {exc}"]
    parameters = template.get("Parameters") or {}
    problems = []
    missing = sorted((set(PLATFORM_PARAMETERS) | set(function.stack_parameter_names)) - set(parameters))
    if missing:
        problems.append(f"its template does not declare the parameters {missing}")
    required = {name for name, spec in parameters.items() if "Default" not in (spec or {})}
    unset = sorted(required - set(PLATFORM_PARAMETERS) - set(function.stack_parameter_names))
    if unset:
        problems.append(f"its template requires {unset}, which nothing sets: give them a Default")
    created = {str(r.get("Type")) for r in (template.get("Resources") or {}).values() if isinstance(r, dict)}
    undeclared = sorted(created - set(function.resource_types))
    if undeclared:
        problems.append(f"its template creates {undeclared}, which resource_types does not declare")
    problems += [f"its template breaks an invariant: {v}" for v in job_template.violations(template)]
    return problems


def _function_classes(path: Path) -> list[tuple[str, type[BusinessFunction]]]:
    path = path.resolve()
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    project = path / "pyproject.toml"
    if project.is_file():
        return _from_entry_points(path, project)
    if (path / "__init__.py").is_file():
        module = _import(path.parent, path.name)
        return [
            (f"{module.__name__}:{name}", cls)
            for name, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BusinessFunction)
            and cls is not BusinessFunction
            and not inspect.isabstract(cls)
        ]
    raise UsageError(
        f"{path} is neither a plug-in's distribution (pyproject.toml) nor a package (__init__.py)"
    )


def _from_entry_points(root: Path, project: Path) -> list[tuple[str, type[BusinessFunction]]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    points = tomllib.loads(project.read_text()).get("project", {}).get("entry-points", {})
    found = []
    for name, target in (points.get(ENTRY_POINT_GROUP) or {}).items():
        module_name, _, attribute = str(target).partition(":")
        source = root / "src" if (root / "src").is_dir() else root
        module = _import(source, module_name)
        cls = getattr(module, attribute, None)
        where = f"plug-in {name!r} ({target})"
        if not (isinstance(cls, type) and issubclass(cls, BusinessFunction)):
            raise UsageError(f"{where} is not a pijobs BusinessFunction")
        found.append((where, cls))
    return found


def _import(folder: Path, module_name: str) -> ModuleType:
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"{module_name} cannot be imported from {folder}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        sys.path.remove(str(folder))


def _cfn_lint(function: BusinessFunction) -> str:
    """cfn-lint's findings over the function's job template ('' for none), or why it did not run."""
    command = shutil.which("cfn-lint")
    if command is None:
        return "skipped: cfn-lint is not installed (pip install cfn-lint)"
    with tempfile.TemporaryDirectory() as folder:
        (template,) = job_template.write(Path(folder), [function])
        done = subprocess.run([command, str(template)], capture_output=True, text=True, check=False)
    return " ".join((done.stdout + done.stderr).split()) if done.returncode else ""
