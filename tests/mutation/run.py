"""Mutation testing of the modules that decide who may do what and how much runs (docs/mutation.md).

``tox -e mutation`` (or ``python tests/mutation/run.py [MODULE ...]`` in a venv with cosmic-ray): for each
module, cosmic-ray lists the mutants (one operator changed at one place), and each mutant runs against that
module's own selection of unit and integration tests; a mutant is killed when the selection fails. Each
module's survivors (their diffs) land in build/mutation/.

A mutant is cheap: the source file is never changed. This process imports the third-party modules the
selection needs once, then forks one child per mutant (two at a time); the child serves the mutated source of
that one module from memory (an import hook ahead of the editable install's) and runs pytest in-process. A
first, unmutated run records which of the module's functions each test calls: a mutant inside a function
runs only the tests that call that function (the others run exactly the same code as without it); a mutant
at module or class level (run at import) runs the whole selection.

The operators are the ones that model realistic bugs in this code: a comparison off by one or turned
around, a condition negated or dropped, and/or swapped, a flag flipped, a number changed, a loop that never
runs, an exception handler that catches nothing, a decorator removed. The arithmetic operators' cross
product (a + b -> a ** b, a >> b, ...) and the variable replacers are left out: they add hundreds of mutants
that no realistic edit makes.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.abc
import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "mutation"

UNIT = "tests/unit"
INTEGRATION = "tests/integration"
# Each module and the tests that speak about it (fast: what its callers and its own tests exercise). No test
# here may start a process that imports pijobs: that process would read the file, not the mutant.
MODULES: dict[str, list[str]] = {
    "shared/lifecycle.py": [
        f"{INTEGRATION}/test_lifecycle.py",
        f"{INTEGRATION}/test_reaper.py",
        f"{INTEGRATION}/test_worker_channel.py",
    ],
    "shared/channel.py": [f"{UNIT}/test_channel_tokens.py", f"{INTEGRATION}/test_worker_channel.py"],
    "api_handler/channel.py": [
        f"{INTEGRATION}/test_worker_calls.py",
        f"{INTEGRATION}/test_worker_channel.py",
        f"{INTEGRATION}/test_job_inputs.py",
    ],
    # (test_worker_needs_no_aws.py, a process importing the worker with AWS libraries blocked, is left out:
    # that process would import the file, not the mutant.)
    "worker/channel.py": [
        f"{UNIT}/test_worker_channel_answers.py",
        f"{INTEGRATION}/test_worker.py",
        f"{INTEGRATION}/test_worker_channel.py",
    ],
    "worker/inputs.py": [f"{UNIT}/test_worker_inputs.py", f"{INTEGRATION}/test_job_inputs.py"],
    "shared/inputs.py": [
        f"{UNIT}/test_inputs.py",
        f"{UNIT}/test_uploads.py",
        f"{INTEGRATION}/test_job_inputs.py",
        f"{INTEGRATION}/test_uploads.py",
    ],
    "shared/uploads.py": [f"{UNIT}/test_uploads.py", f"{INTEGRATION}/test_uploads.py"],
    "dispatcher/verifier.py": [f"{INTEGRATION}/test_uploads.py"],
    "dispatcher/reaper.py": [f"{INTEGRATION}/test_reaper.py", f"{INTEGRATION}/test_reaper_sweep.py"],
    "shared/capacity.py": [
        f"{UNIT}/test_capacity_item.py",
        f"{UNIT}/test_facts.py",  # (the item's size at MaxActiveStacks' ceiling)
        f"{UNIT}/test_bench_pipeline.py",
        f"{INTEGRATION}/test_capacity_counter.py",
        f"{INTEGRATION}/test_capacity.py",
        f"{INTEGRATION}/test_reaper.py",
        f"{INTEGRATION}/test_fair_share.py",
    ],
    "shared/fairshare.py": [
        f"{UNIT}/test_fairshare.py",
        f"{INTEGRATION}/test_tenants.py",
        f"{INTEGRATION}/test_fair_share.py",
    ],
    "shared/tenants.py": [
        f"{UNIT}/test_fairshare.py",
        f"{INTEGRATION}/test_tenants.py",
        f"{INTEGRATION}/test_fair_share.py",
    ],
    "dispatcher/admission.py": [
        f"{INTEGRATION}/test_admission.py",
        f"{INTEGRATION}/test_capacity.py",
        f"{INTEGRATION}/test_fair_share.py",
        f"{INTEGRATION}/test_dispatcher.py",
    ],
}

KEPT_OPERATORS = (
    r"core/ReplaceComparisonOperator_(Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Eq_NotEq|NotEq_Eq|Is_IsNot|IsNot_Is)$",
    r"core/ReplaceBinaryOperator_(Add_Sub|Sub_Add)$",
    r"core/(AddNot|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr|ReplaceOrWithAnd)$",
    r"core/(ReplaceUnaryOperator_Delete_Not|ReplaceBreakWithContinue|ReplaceContinueWithBreak)$",
    r"core/(NumberReplacer|ZeroIterationForLoop|ExceptionReplacer|RemoveDecorator)$",
)
JOBS = 2  # mutants at once (each a forked child)
# What pytest prints, exiting with USAGE_ERROR, when a conftest.py raised on import (whatever it raised).
BROKEN_CONFTEST = "while loading conftest"
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "--no-header"]


def operators() -> list[str]:
    """Every operator cosmic-ray offers that KEPT_OPERATORS leaves out (the filter's exclude list)."""
    listed = subprocess.run(
        ["cosmic-ray", "operators"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [f"^{re.escape(name)}$" for name in listed if not any(re.match(k, name) for k in KEPT_OPERATORS)]


def config(module: str, exclude: list[str]) -> str:
    return "\n".join(
        [
            "[cosmic-ray]",
            f"module-path = {json.dumps(module)}",
            "timeout = 300.0",
            "excluded-modules = []",
            'test-command = "run by tests/mutation/run.py"',
            "[cosmic-ray.distributor]",
            'name = "local"',
            "[cosmic-ray.filters.operators-filter]",
            f"exclude-operators = {json.dumps(exclude)}",
            "",
        ]
    )


def results(db: Path) -> dict[str, object]:
    """Counts and the survivors' diffs from cosmic-ray's session database."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT m.operator_name, m.start_pos_row, r.test_outcome, r.diff, r.worker_outcome "
            "FROM mutation_specs m JOIN work_results r ON m.job_id = r.job_id"
        ).fetchall()
        skipped = conn.execute(
            "SELECT COUNT(*) FROM work_results WHERE worker_outcome = 'SKIPPED'"
        ).fetchone()
    run = [r for r in rows if r[4] != "SKIPPED"]
    killed = [r for r in run if r[2] == "KILLED" or r[4] in ("ABNORMAL", "EXCEPTION")]
    survivors = sorted((r for r in run if r[2] == "SURVIVED"), key=lambda r: (r[1], r[0]))
    incompetent = [r for r in run if r[2] == "INCOMPETENT"]
    total = len(killed) + len(survivors)
    return {
        "mutants": total,
        "killed": len(killed),
        "survived": len(survivors),
        "incompetent": len(incompetent),
        "skipped": skipped[0],
        "score": round(100 * len(killed) / total, 1) if total else 100.0,
        "survivors": [{"operator": r[0], "line": r[1], "diff": r[3]} for r in survivors],
    }


# --- the fork server ------------------------------------------------------------------------------------


class Served(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports one module from a source text in memory instead of its file (compiled under its file's name,
    so tracebacks and the call record name the file)."""

    def __init__(self, name: str, path: Path, source: str) -> None:
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self)

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(compile(self.source, str(self.path), "exec"), module.__dict__)


class CallRecord:
    """A pytest plug-in recording, per test, the first lines of the module's code objects it runs (its
    functions, methods, lambdas, comprehensions). Calls made while a fixture of a wider scope than the test
    is set up or torn down count for every test (``*``)."""

    def __init__(self, path: Path) -> None:
        self.filename = str(path)
        self.current = "*"
        self.wide = 0
        self.calls: dict[str, set[int]] = {"*": set()}
        self.order: list[str] = []
        self.durations: dict[str, float] = {}

    def trace(self, frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if code.co_filename == self.filename:
            self.calls.setdefault("*" if self.wide else self.current, set()).add(code.co_firstlineno)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: Any) -> Iterator[None]:
        self.current = item.nodeid
        self.order.append(item.nodeid)
        started = time.monotonic()
        yield
        self.durations[item.nodeid] = time.monotonic() - started
        self.current = "*"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Iterator[None]:
        wide = fixturedef.scope != "function"
        self.wide += wide
        yield
        self.wide -= wide


def dotted(module: str) -> str:
    """The import name of a module path of this repository (pyproject's package-dir: shared/ is
    pijobs.shared, ...)."""
    return "pijobs." + module.removesuffix(".py").replace("/", ".")


def _child(module: str, source: str, args: list[str], log: str, record: CallRecord | None = None) -> None:
    """In a forked child: serve ``source`` as ``module``, run pytest with ``args``, exit with its code."""
    code = 3
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()  # its own group: a time-out kills whatever it started
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.meta_path.insert(0, Served(dotted(module), ROOT / module, source))
        plugins: list[object] = []
        if record is not None:
            plugins.append(record)
            threading.settrace(record.trace)  # type: ignore[arg-type]
            sys.settrace(record.trace)  # type: ignore[arg-type]
        code = int(pytest.main([*PYTEST_ARGS, *args], plugins=plugins))
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        if record is not None:
            loaded = (ROOT / module).resolve() == Path(sys.modules[dotted(module)].__file__ or "").resolve()
            third_party = sorted(
                name
                for name, mod in list(sys.modules.items())
                if not name.startswith(("pijobs", "__main__", "conftest"))
                and not str(getattr(mod, "__file__", None) or "").startswith(str(ROOT))
            )
            Path(log + ".json").write_text(
                json.dumps(
                    {
                        "served": loaded,
                        "third_party": third_party,
                        "calls": {test: sorted(lines) for test, lines in record.calls.items()},
                        "order": record.order,
                        "durations": record.durations,
                    }
                )
            )
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def warm(names: list[str]) -> None:
    """Import the third-party modules a selection used, once, in this (the parent) process; never pijobs
    (a module that imports it is left to the children)."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except BaseException:
            continue
        for loaded in [n for n in sys.modules if n == "pijobs" or n.startswith("pijobs.")]:
            del sys.modules[loaded]  # pulled in by a plug-in: each child imports its own


@dataclass
class Selection:
    """Which tests run for a mutant at a line: the ones that call the function around it."""

    tests: list[str]
    order: list[str]
    calls: dict[str, list[int]]
    functions: list[tuple[int, int, int]]  # (first line incl. decorators, first body line, last line)
    seconds: float

    durations: dict[str, float]

    def for_line(self, line: int) -> list[str]:
        """The tests that can tell a mutant at ``line``, the quickest first (-x stops at the first that fails:
        a mutant is killed as soon as possible)."""
        around = [f for f in self.functions if f[0] <= line <= f[2]]
        if not around or line < around[0][1] or self._called(around[0], "*"):
            chosen = self.order  # module or class level, a decorator or a signature: run at import
        else:
            chosen = [test for test in self.order if self._called(around[0], test)]
        # By function, not by parameters: a parameter's id may differ from one collection to the next.
        functions: dict[str, float] = {}
        for test in chosen:
            function = test.split("[", 1)[0]
            functions[function] = functions.get(function, 0.0) + self.durations.get(test, 0.0)
        return sorted(functions, key=functions.__getitem__)

    def _called(self, function: tuple[int, int, int], test: str) -> bool:
        return any(function[0] <= line <= function[2] for line in self.calls.get(test, []))


def functions_of(source: str) -> list[tuple[int, int, int]]:
    """The module's outermost functions and methods (nested ones belong to them), with their lines."""
    found: list[tuple[int, int, int]] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                found.append((first, node.body[0].lineno, node.end_lineno or node.lineno))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(ast.parse(source).body)
    return found


def baseline(module: str, source: str, leave_out: list[str]) -> Selection:
    """The selection run once unmutated (it must pass), recording which test calls which function; the
    third-party modules it imported are imported here afterwards, for the children to inherit."""
    tests = [test for test in MODULES[module] if test not in leave_out]
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        log = f"{tmp}/baseline.log"
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(module, source, [*tests, f"--basetemp={tmp}/t"], log, CallRecord(ROOT / module))
        with stopping({pid: None}):
            _, status = os.waitpid(pid, 0)
        seconds = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{module}: its tests fail without a mutant:\n{Path(log).read_text()[-3000:]}")
        found = json.loads(Path(log + ".json").read_text())
    if not found["served"]:
        sys.exit(f"{module}: the tests imported {dotted(module)} from elsewhere than {module}")
    warm(found["third_party"])
    return Selection(tests, found["order"], found["calls"], functions_of(source), seconds, found["durations"])


@dataclass
class Mutant:
    key: str
    line: int
    source: str
    label: str = ""


@contextlib.contextmanager
def stopping(running: dict[int, Any]) -> Iterator[None]:
    """Kills the children still running when the run ends early (a signal, an error)."""
    try:
        yield
    finally:
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)


def run_all(module: str, mutants: list[Mutant], selection: Selection) -> Iterator[tuple[Mutant, str, str]]:
    """Each mutant against the tests that can see it, JOBS at a time: (mutant, KILLED or SURVIVED, why)."""
    timeout = 60 + 3 * selection.seconds
    pending = list(mutants)
    running: dict[int, tuple[Mutant, float, str]] = {}
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp, stopping(running):
        while pending or running:
            while pending and len(running) < JOBS:
                mutant = pending.pop(0)
                tests = selection.for_line(mutant.line)
                if not tests:
                    yield mutant, "SURVIVED", "no test calls the code it changes"
                    continue
                log = f"{tmp}/{mutant.key}.log"
                pid = os.fork()
                if pid == 0:
                    _child(module, mutant.source, [*tests, f"--basetemp={tmp}/{mutant.key}"], log)
                running[pid] = (mutant, time.monotonic(), log)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                for child, (_, started, _) in list(running.items()):
                    if time.monotonic() - started > timeout:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(child, signal.SIGKILL)
                time.sleep(0.05)
                continue
            if pid not in running:
                continue
            mutant, _, log = running.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            text = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
            output = text[-2000:]
            if code == pytest.ExitCode.USAGE_ERROR and BROKEN_CONFTEST in text:
                yield mutant, "KILLED", output  # a conftest imports the module: the mutant broke loading it
            elif code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.NO_TESTS_COLLECTED):
                sys.exit(
                    f"{module}: the tests chosen for a mutant at line {mutant.line} did not run:\n{output}"
                )
            elif code == 0:
                yield mutant, "SURVIVED", output
            else:
                yield mutant, "KILLED", output if code > 0 else f"time-out or signal {-code}"


def mutate(module: str, exclude: list[str], leave_out: list[str]) -> dict[str, object]:
    from cosmic_ray.mutating import _make_diff, mutate_code
    from cosmic_ray.plugins import get_operator
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    source_path = ROOT / module
    original = source_path.read_text()
    started = time.monotonic()
    name = module.replace("/", ".").removesuffix(".py")
    cfg, db = OUT / f"{name}.toml", OUT / f"{name}.sqlite"  # kept: a stopped run's results stay readable
    db.unlink(missing_ok=True)
    cfg.write_text(config(module, exclude))
    for step in (
        ["cosmic-ray", "init", str(cfg), str(db)],
        ["cr-filter-operators", str(db), str(cfg)],
        ["cr-filter-pragma", str(db)],
    ):
        subprocess.run(step, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    selection = baseline(module, original, leave_out)
    with use_db(str(db), WorkDB.Mode.open) as work:
        mutants, diffs = [], {}
        for item in list(work.pending_work_items):
            (spec,) = item.mutations
            operator = get_operator(spec.operator_name)(**(getattr(spec, "operator_args", None) or {}))
            mutated = mutate_code(original, operator, spec.occurrence)
            if mutated is None:
                work.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.NO_TEST))
                continue
            mutants.append(Mutant(item.job_id, spec.start_pos[0], mutated))
            diffs[item.job_id] = "\n".join(_make_diff(original, mutated, Path(module)))
        for mutant, verdict, output in run_all(module, mutants, selection):
            outcome = TestOutcome.KILLED if verdict == "KILLED" else TestOutcome.SURVIVED
            result = WorkResult(
                output=output,
                diff=diffs[mutant.key],
                test_outcome=outcome,
                worker_outcome=WorkerOutcome.NORMAL,
            )
            work.set_result(mutant.key, result)
    found = results(db)
    found["seconds"] = round(time.monotonic() - started)
    found["baseline_seconds"] = round(selection.seconds, 1)
    return found


def recheck(module: str, leave_out: list[str]) -> list[str]:
    """The last run's survivors of ``module`` against the tests as they are now: each diff applied to a copy
    of the file, served to the module's tests like any mutant; one line per survivor (KILLED or SURVIVED)."""
    name = module.replace("/", ".").removesuffix(".py")
    original = (ROOT / module).read_text()
    selection = baseline(module, original, leave_out)
    mutants = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        for number, survivor in enumerate(json.loads((OUT / f"{name}.json").read_text())["survivors"]):
            copy = Path(tmp) / "source.py"
            copy.write_text(original)
            diff = survivor["diff"].replace("--- mutation diff ---\n", "") + "\n"  # (stored without its last)
            patch = ["patch", "--quiet", "--no-backup-if-mismatch", str(copy)]
            applied = subprocess.run(patch, input=diff, text=True, capture_output=True).returncode == 0
            changed = next(x for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++"))
            if not applied:  # the code it changed is gone or rewritten since the run
                print(f"GONE     {module}:{survivor['line']} (in the run) {survivor['operator']}", flush=True)
                continue
            mutated = copy.read_text()
            # The line as the file is now (patch finds the diff's place when lines moved since the run).
            pairs = zip(original.splitlines(), mutated.splitlines(), strict=False)  # (a removed decorator)
            line = next((n for n, (a, b) in enumerate(pairs, 1) if a != b), survivor["line"])
            was = f" (line {survivor['line']} in the run)" if line != survivor["line"] else ""
            label = f"{module}:{line}{was} {survivor['operator']}: {changed[1:].strip()}"
            mutants.append(Mutant(f"survivor-{number}", line, mutated, label))
    lines = []
    for mutant, verdict, _ in sorted(run_all(module, mutants, selection), key=lambda r: r[0].line):
        lines.append(f"{verdict:8} {mutant.label}")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument(
        "--survivors", action="store_true", help="only run the last run's survivors against the tests now"
    )
    parser.add_argument(
        "--leave-out",
        action="append",
        default=[],
        metavar="TEST_FILE",
        help="run the selections without this test file (what a new test file adds: the score without it)",
    )
    args = parser.parse_args()
    chosen = args.modules or list(MODULES)
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        parser.error(f"not a mutated module: {', '.join(unknown)}")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.dont_write_bytecode = True
    os.chdir(ROOT)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUT.mkdir(parents=True, exist_ok=True)
    if args.survivors:
        for module in chosen:
            recheck(module, args.leave_out)
        return
    exclude = operators()
    print(f"{'module':28} {'mutants':>7} {'killed':>6} {'survived':>8} {'score':>6} {'seconds':>7}")
    for module in chosen:
        found = mutate(module, exclude, args.leave_out)
        name = module.replace("/", ".").removesuffix(".py")  # as mutate() names its files
        (OUT / f"{name}.json").write_text(json.dumps(found, indent=1))
        row = (found["mutants"], found["killed"], found["survived"], f"{found['score']}%", found["seconds"])
        print(f"{module:28} {row[0]:>7} {row[1]:>6} {row[2]:>8} {row[3]:>6} {row[4]:>7}", flush=True)


if __name__ == "__main__":
    main()
