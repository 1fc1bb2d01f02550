"""Mutation testing of the modules that decide who may do what and how much runs (docs/mutation.md).

``tox -e mutation`` (or ``python tests/mutation/run.py [MODULE ...]`` in a venv with cosmic-ray): for each
module, cosmic-ray changes one operator at a time in the source file itself (the editable install imports
it from there), runs that module's own selection of unit and integration tests, and counts a mutant killed
when the selection fails. One mutant at a time, one module after the other; the file is restored after each
mutant, and by this script on any exit. Each module's survivors (their diffs) land in build/mutation/.

The operators are the ones that model realistic bugs in this code: a comparison off by one or turned
around, a condition negated or dropped, and/or swapped, a flag flipped, a number changed, a loop that never
runs, an exception handler that catches nothing, a decorator removed. The arithmetic operators' cross
product (a + b -> a ** b, a >> b, ...) and the variable replacers are left out: they add hundreds of mutants
that no realistic edit makes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "mutation"

UNIT = "tests/unit"
INTEGRATION = "tests/integration"
# Each module and the tests that speak about it (fast: what its callers and its own tests exercise).
MODULES: dict[str, list[str]] = {
    "shared/lifecycle.py": [
        f"{INTEGRATION}/test_lifecycle.py",
        f"{INTEGRATION}/test_reaper.py",
        f"{INTEGRATION}/test_worker_channel.py",
    ],
    "shared/channel.py": [f"{UNIT}/test_channel_tokens.py", f"{INTEGRATION}/test_worker_channel.py"],
    "api_handler/channel.py": [f"{INTEGRATION}/test_worker_channel.py", f"{INTEGRATION}/test_job_inputs.py"],
    "worker/channel.py": [f"{UNIT}/test_worker_needs_no_aws.py", f"{INTEGRATION}/test_worker.py"],
    "worker/inputs.py": [f"{UNIT}/test_worker_inputs.py", f"{INTEGRATION}/test_job_inputs.py"],
    "shared/inputs.py": [f"{UNIT}/test_inputs.py", f"{INTEGRATION}/test_job_inputs.py"],
    "shared/uploads.py": [f"{UNIT}/test_uploads.py", f"{INTEGRATION}/test_uploads.py"],
    "dispatcher/verifier.py": [f"{INTEGRATION}/test_uploads.py"],
    "dispatcher/reaper.py": [f"{INTEGRATION}/test_reaper.py"],
    "shared/capacity.py": [
        f"{INTEGRATION}/test_capacity.py",
        f"{INTEGRATION}/test_reaper.py",
        f"{INTEGRATION}/test_fair_share.py",
    ],
    "shared/fairshare.py": [f"{UNIT}/test_fairshare.py", f"{INTEGRATION}/test_fair_share.py"],
    "shared/tenants.py": [f"{UNIT}/test_fairshare.py", f"{INTEGRATION}/test_fair_share.py"],
    "dispatcher/admission.py": [
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
TIMEOUT_SECONDS = 300


def operators() -> list[str]:
    """Every operator cosmic-ray offers that KEPT_OPERATORS leaves out (the filter's exclude list)."""
    listed = subprocess.run(
        ["cosmic-ray", "operators"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [f"^{re.escape(name)}$" for name in listed if not any(re.match(k, name) for k in KEPT_OPERATORS)]


def config(module: str, tests: list[str], exclude: list[str]) -> str:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    return "\n".join(
        [
            "[cosmic-ray]",
            f"module-path = {json.dumps(module)}",
            f"timeout = {TIMEOUT_SECONDS}.0",
            "excluded-modules = []",
            f"test-command = {json.dumps(' '.join(command))}",
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
    survivors = [r for r in run if r[2] == "SURVIVED"]
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


def mutate(module: str, exclude: list[str]) -> dict[str, object]:
    source = ROOT / module
    original = source.read_bytes()
    started = time.monotonic()
    name = module.replace("/", ".").removesuffix(".py")
    cfg, db = OUT / f"{name}.toml", OUT / f"{name}.sqlite"  # kept: a stopped run's results stay readable
    db.unlink(missing_ok=True)
    cfg.write_text(config(module, MODULES[module], exclude))
    try:
        baseline = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *MODULES[module]],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if baseline.returncode != 0:
            sys.exit(f"{module}: its tests fail without a mutant:\n{baseline.stdout[-3000:]}")
        for step in (
            ["cosmic-ray", "init", str(cfg), str(db)],
            ["cr-filter-operators", str(db), str(cfg)],
            ["cr-filter-pragma", str(db)],
            ["cosmic-ray", "exec", str(cfg), str(db)],
        ):
            subprocess.run(step, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        found = results(db)
    finally:
        source.write_bytes(original)
    found["seconds"] = round(time.monotonic() - started)
    return found


def recheck(module: str) -> list[str]:
    """The last run's survivors of ``module`` against the tests as they are now: each diff applied, the
    module's selection run, one line per survivor (KILLED or SURVIVED). The file is restored after each."""
    name = module.replace("/", ".").removesuffix(".py")
    source = ROOT / module
    original = source.read_bytes()
    lines = []
    try:
        for survivor in json.loads((OUT / f"{name}.json").read_text())["survivors"]:
            source.write_bytes(original)
            diff = survivor["diff"].replace("--- mutation diff ---\n", "")
            patch = ["patch", "--quiet", "--no-backup-if-mismatch", str(source)]
            subprocess.run(patch, input=diff, text=True, check=True, capture_output=True)
            tests = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *MODULES[module]]
            done = subprocess.run(tests, cwd=ROOT, capture_output=True)
            changed = next(x for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++"))
            verdict = "KILLED" if done.returncode else "SURVIVED"
            lines.append(
                f"{verdict:8} {module}:{survivor['line']} {survivor['operator']}: {changed[1:].strip()}"
            )
            print(lines[-1], flush=True)
    finally:
        source.write_bytes(original)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument(
        "--survivors", action="store_true", help="only run the last run's survivors against the tests now"
    )
    args = parser.parse_args()
    chosen = args.modules or list(MODULES)
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        parser.error(f"not a mutated module: {', '.join(unknown)}")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant's byte code never outlives it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally restores the source
    OUT.mkdir(parents=True, exist_ok=True)
    if args.survivors:
        for module in chosen:
            recheck(module)
        return
    exclude = operators()
    print(f"{'module':28} {'mutants':>7} {'killed':>6} {'survived':>8} {'score':>6} {'seconds':>7}")
    for module in chosen:
        found = mutate(module, exclude)
        name = module.replace("/", ".").removesuffix(".py")  # as mutate() names its files
        (OUT / f"{name}.json").write_text(json.dumps(found, indent=1))
        row = (found["mutants"], found["killed"], found["survived"], f"{found['score']}%", found["seconds"])
        print(f"{module:28} {row[0]:>7} {row[1]:>6} {row[2]:>8} {row[3]:>6} {row[4]:>7}", flush=True)


if __name__ == "__main__":
    main()
