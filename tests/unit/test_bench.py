"""The pi benchmark's measuring side: the process tree it watches and one measured run."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import pi as bench
from pijobs.worker.pi import compute_pi
from pijobs.worker.pi.engine import resolve_workers

FORKS_AND_WAITS = textwrap.dedent(
    """
    import os, sys, time
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
    print("ready", flush=True)
    time.sleep(30)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_tree_finds_a_process_and_its_child() -> None:
    proc = subprocess.Popen([sys.executable, "-c", FORKS_AND_WAITS], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        tree = bench._tree(proc.pid)
        assert tree[0] == proc.pid
        assert len(tree) == 2
        assert all(bench._hwm(pid) > 0 for pid in tree)
    finally:
        for pid in bench._tree(proc.pid)[1:]:
            subprocess.run(["kill", str(pid)], check=False)
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_measure_runs_the_engine_with_workers_and_checks_its_bytes(tmp_path: Path) -> None:
    digits = 400_000  # large enough for worker processes and scratch files
    run = bench.measure("engine", digits, tmp_path)
    expected = io.BytesIO()
    compute_pi(digits, expected, workers=1)
    assert run.sha256 == hashlib.sha256(expected.getvalue()).hexdigest()
    assert run.seconds > 0 and run.cpu_seconds > 0
    workers = resolve_workers(digits, None)
    processes = workers + 1 if workers > 1 else 1
    assert run.peak_bytes > processes * 10 * 2**20  # the parent and its workers, each a whole interpreter
    assert list(tmp_path.iterdir()) == []  # the output file is removed after it is checked
