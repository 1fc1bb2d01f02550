"""`pijobs up` killed outright (SIGKILL): its workers go with it, as instances go with their machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    return parents


def _worker_processes(root: int) -> list[int]:
    """The descendants of ``root`` that run the worker: exec'd (``-m pijobs.worker``) or forked from a warm
    interpreter of it (their command line is the fork server's)."""
    parents = _parents()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        todo.extend(children)
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"worker" in command:
                found.append(child)
    return found


def _alive(pids: list[int]) -> list[int]:
    live = _parents()
    return [pid for pid in pids if pid in live]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
@pytest.mark.usefixtures("wordcount_plugin")
def test_sigkill_of_up_takes_its_workers_along(tmp_path: Path) -> None:
    log = (tmp_path / "up.log").open("w+")
    up = subprocess.Popen(
        [sys.executable, "-m", "pijobs.cli", "up", "--ephemeral", "--port", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PIJOBS_LOG_LEVEL": "WARNING"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        lines: list[str] = []
        while not any(line.startswith("API key: ") for line in lines):
            assert up.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.2)
            lines = Path(log.name).read_text().splitlines()
        url = next(line for line in lines if line.startswith("API: ")).split()[1]
        key = next(line for line in lines if line.startswith("API key: ")).split()[2]
        session = requests.Session()
        session.headers["x-api-key"] = key
        body = {"function": "word-count", "params": {"text": "a b", "pause_seconds": 120}}
        job_id = session.post(f"{url}/jobs", json=body, timeout=30).json()["job_id"]
        while session.get(f"{url}/jobs/{job_id}", timeout=30).json()["status"] != "RUNNING":
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.2)
        workers = _worker_processes(up.pid)
        assert workers

        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
        killed = time.monotonic()
        while _alive(workers):
            assert time.monotonic() - killed < 10, "the worker outlived pijobs up"
            time.sleep(0.2)
        print(f"the worker was gone {time.monotonic() - killed:.1f} s after pijobs up was killed")
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
        log.close()
