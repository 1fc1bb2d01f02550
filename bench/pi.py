"""Benchmark the pi engine against gmpy2's const_pi (MPFR), mpmath and python-flint's arb, side by side.

    python -m bench.pi [--sizes 100000,1000000] [--huge] [--repeat 3] [--methods engine,flint-2t]

Every run is a fresh subprocess that computes b"3." and N decimals (truncated), converts them to decimal
and writes them to a file; the parent polls the process tree's peak resident memory (VmHWM summed over
all its processes, plus the most the engine's memory-backed scratch files held at once) and checks that
every method produced the same bytes. Methods take turns within each
repetition so that a noisy machine affects them alike; the table shows medians.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("engine", "const_pi", "mpmath", "flint-1t", "flint-2t")
DEFAULT_SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
HUGE = 100_000_000


@dataclass(frozen=True)
class Run:
    """One measured run."""

    method: str
    digits: int
    seconds: float
    cpu_seconds: float
    peak_bytes: int
    sha256: str


# --- the child side: one method, one size, timed from the start of the computation to the last byte ---


def _bits(digits: int) -> int:
    return math.ceil(digits * math.log2(10)) + 64


def _engine(digits: int, path: str) -> None:
    from pijobs.worker.pi import compute_pi

    with open(path, "wb") as out:
        compute_pi(digits, out)


def _const_pi(digits: int, path: str) -> None:
    import gmpy2

    with gmpy2.context(gmpy2.get_context(), precision=_bits(digits)):
        scaled = gmpy2.mpz(gmpy2.floor(gmpy2.const_pi() * gmpy2.mpz(10) ** digits))
    _write_integer_digits(scaled.digits(), path)


def _mpmath(digits: int, path: str) -> None:
    import mpmath

    mpmath.mp.dps = digits + 12
    text = mpmath.nstr(mpmath.mp.pi, digits + 10, strip_zeros=False)
    with open(path, "wb") as out:
        out.write(text[: digits + 2].encode("ascii"))


def _flint(threads: int) -> Callable[[int, str], None]:
    def run(digits: int, path: str) -> None:
        import flint

        flint.ctx.threads = threads
        flint.ctx.prec = _bits(digits)
        scaled = (flint.arb.pi() * flint.fmpz(10) ** digits).floor().unique_fmpz()
        if scaled is None:
            raise RuntimeError("arb's enclosure of pi is too wide to truncate")
        _write_integer_digits(str(scaled), path)

    return run


def _write_integer_digits(text: str, path: str) -> None:
    with open(path, "wb") as out:
        out.write(b"3.")
        out.write(text[1:].encode("ascii"))


CHILDREN: dict[str, Callable[[int, str], None]] = {
    "engine": _engine,
    "const_pi": _const_pi,
    "mpmath": _mpmath,
    "flint-1t": _flint(1),
    "flint-2t": _flint(2),
}


#: Imported before the clock starts, so that the timings compare computations, not imports.
IMPORTS = {
    "engine": "pijobs.worker.pi",
    "const_pi": "gmpy2",
    "mpmath": "mpmath",
    "flint-1t": "flint",
    "flint-2t": "flint",
}


def _child(method: str, digits: int, path: str) -> None:
    importlib.import_module(IMPORTS[method])
    started = time.perf_counter()
    CHILDREN[method](digits, path)
    print(json.dumps({"seconds": time.perf_counter() - started}))


# --- the parent side ---


def _tree(root: int) -> list[int]:
    """root and all its descendants.

    Reads each process's children lists (a few small files), not all of /proc: polling every 20 ms must
    not take CPU from the measured methods, which use every core (a scan of /proc took ~15 % of one).
    """
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return found


def _hwm(pid: int) -> int:
    """Peak resident memory of one process so far, in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _dir_bytes(root: Path) -> int:
    """Bytes in the files under root right now (files may come and go meanwhile)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def measure(method: str, digits: int, workdir: Path) -> Run:
    """Run one method in a fresh process tree.

    Peak memory is the sum of each process's own peak plus the most the engine's scratch files (on tmpfs,
    so memory too) held at once: an upper bound for the tree at any one moment. CPU time is user + system
    of the whole tree, interpreter start-up included.
    """
    path = workdir / f"{method}-{digits}.txt"
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    scratch = Path(tempfile.mkdtemp(prefix="pi-bench-scratch-", dir=shm))
    try:
        return _measure(method, digits, path, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(method: str, digits: int, path: Path, scratch: Path) -> Run:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PIJOBS_PI_SCRATCH": str(scratch),
    }
    command = [sys.executable, "-m", "bench.pi", "--child", method, str(digits), str(path)]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peaks: dict[int, int] = {}
    scratch_peak = 0
    while True:
        for pid in _tree(proc.pid):
            peaks[pid] = max(peaks.get(pid, 0), _hwm(pid))
        scratch_peak = max(scratch_peak, _dir_bytes(scratch))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{method} at {digits:,} digits failed:\n{stderr}")
    sha = _sha256(path)
    path.unlink()
    cpu = usage.ru_utime + usage.ru_stime
    peak = sum(peaks.values()) + scratch_peak
    return Run(method, digits, json.loads(stdout)["seconds"], cpu, peak, sha)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def bench(sizes: list[int], methods: list[str], repeat: int, log: Callable[[str], None]) -> list[Run]:
    """All runs; methods take turns within each repetition."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="pi-bench-") as tmp:
        for digits in sizes:
            for _ in range(repeat):
                for method in methods:
                    run = measure(method, digits, Path(tmp))
                    log(
                        f"{method:>9} {digits:>11,} {run.seconds:9.4f} s {run.cpu_seconds:9.3f} s cpu "
                        f"{run.peak_bytes / 2**20:8.0f} MiB"
                    )
                    runs.append(run)
    return runs


def check_identical(runs: list[Run]) -> list[str]:
    """Sizes where the methods disagree (should be none)."""
    problems = []
    for digits in sorted({r.digits for r in runs}):
        hashes = {r.method: r.sha256 for r in runs if r.digits == digits}
        if len({r.sha256 for r in runs if r.digits == digits}) != 1:
            problems.append(f"{digits:,} digits: results differ: {hashes}")
    return problems


def table(runs: list[Run]) -> str:
    """Markdown table: medians, peak memory, engine time divided by each method's."""
    lines = [
        "| digits | method | median s | min s | median CPU s | peak MiB (all processes) | engine / method |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for digits in sorted({r.digits for r in runs}):
        medians = {}
        for method in dict.fromkeys(r.method for r in runs if r.digits == digits):
            mine = [r for r in runs if r.digits == digits and r.method == method]
            medians[method] = (
                statistics.median(r.seconds for r in mine),
                min(r.seconds for r in mine),
                statistics.median(r.cpu_seconds for r in mine),
                max(r.peak_bytes for r in mine),
            )
        engine = medians.get("engine", (math.nan,))[0]
        for method, (median, best, cpu, peak) in medians.items():
            lines.append(
                f"| {digits:,} | {method} | {_secs(median)} | {_secs(best)} | {cpu:.2f} | "
                f"{peak / 2**20:,.0f} | {engine / median:.2f} |"
            )
    return "\n".join(lines)


def _secs(seconds: float) -> str:
    return f"{seconds:.4f}" if seconds < 1 else f"{seconds:.2f}"


def targets(runs: list[Run]) -> list[str]:
    """The goals: <= 0.75x flint's best at 10^7, <= 0.8x and < 4 GiB at 10^8, <= const_pi up to 10^5."""
    median = {
        (r.digits, r.method): statistics.median(
            x.seconds for x in runs if (x.digits, x.method) == (r.digits, r.method)
        )
        for r in runs
    }
    peak = {(r.digits, r.method): r.peak_bytes for r in runs}
    lines = []
    for digits, goal in ((10**7, 0.75), (10**8, 0.8)):
        flint = [median[digits, m] for m in ("flint-1t", "flint-2t") if (digits, m) in median]
        if (digits, "engine") in median and flint:
            ratio = median[digits, "engine"] / min(flint)
            lines.append(
                f"{digits:,}: engine / flint best = {ratio:.2f} (goal <= {goal}): {_met(ratio <= goal)}"
            )
    if (10**8, "engine") in peak:
        gib = max(r.peak_bytes for r in runs if (r.digits, r.method) == (10**8, "engine")) / 2**30
        lines.append(f"100,000,000: engine peak memory {gib:.2f} GiB (goal < 4): {_met(gib < 4)}")
    for digits in (10**4, 10**5):
        if (digits, "engine") in median and (digits, "const_pi") in median:
            ratio = median[digits, "engine"] / median[digits, "const_pi"]
            lines.append(f"{digits:,}: engine / const_pi = {ratio:.2f} (goal <= 1): {_met(ratio <= 1)}")
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pi", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="comma-separated digits")
    parser.add_argument("--huge", action="store_true", help=f"also {HUGE:,} digits")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and size (median reported)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS)
    )
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "DIGITS", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        method, digits, path = args.child
        _child(method, int(digits), path)
        return 0
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    sizes = args.sizes + ([HUGE] if args.huge else [])
    runs = bench(sizes, methods, args.repeat, lambda line: print(line, file=sys.stderr, flush=True))
    print(table(runs))
    print()
    for line in targets(runs):
        print(f"- {line}")
    problems = check_identical(runs)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
