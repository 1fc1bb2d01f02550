"""`pijobs up --data-dir D` remembers: keys, jobs and results survive Ctrl-C and SIGKILL, at one address."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest
import requests

pytestmark = pytest.mark.e2e

TIMEOUT_S = 120


class Up:
    """One `pijobs up --data-dir` process and what it printed."""

    def __init__(self, data_dir: Path, log_path: Path, *, sigint: Any = signal.SIG_DFL) -> None:
        self.log_path = log_path
        self._log: IO[str] = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pijobs.cli", "up", "--data-dir", str(data_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PIJOBS_LOG_LEVEL": "WARNING"},
            start_new_session=True,
            # What a shell hands a command: SIGINT as it is in a terminal, or ignored (a script's `&` job)
            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
        )
        deadline = time.monotonic() + TIMEOUT_S
        while not self.value("API key: "):
            assert self.process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        self.url, self.key = self.value("API: "), self.value("API key: ")
        assert self.value("Console: ").startswith(f"{self.url}/console ")

    def lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def value(self, prefix: str) -> str:
        return next((line[len(prefix) :] for line in self.lines() if line.startswith(prefix)), "")

    def session(self, key: str | None = None) -> requests.Session:
        session = requests.Session()
        session.headers["x-api-key"] = key or self.key
        return session

    def stop(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=60)
        self._log.close()


def _wait_for(session: requests.Session, url: str, job_id: str, statuses: set[str]) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        job = session.get(f"{url}/jobs/{job_id}", timeout=30).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def _result_sha256(session: requests.Session, url: str, job_id: str) -> str:
    response = session.get(f"{url}/jobs/{job_id}/result", timeout=30)
    assert response.status_code == 200, response.text
    return hashlib.sha256(response.content).hexdigest()


def _saved_as(data_dir: Path, job_id: str, status: str) -> bool:
    """Whether the data dir's copy of the jobs table has the job in that status (its result saved first)."""
    table = data_dir / "table.jsonl"
    lines = table.read_text().splitlines() if table.exists() else []
    return any(job_id in line and f'"{status}"' in line for line in lines)


@pytest.mark.usefixtures("wordcount_plugin")
def test_jobs_results_and_keys_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Up(data_dir, tmp_path / "up-1.log")
    try:
        assert first.value("Data: ").startswith(str(data_dir.resolve()))
        session = first.session()
        done = session.post(f"{first.url}/jobs", json={"digits": 1000}, timeout=30).json()["job_id"]
        job = _wait_for(session, first.url, done, {"SUCCEEDED"})
        sha256 = _result_sha256(session, first.url, done)
        assert sha256 == job["result"]["sha256"]
        # `up` says where each worker's log is, and `pijobs logs` prints a job's.
        assert first.value("Worker logs: ").startswith(f"{data_dir / 'logs'}/<instance>.log (pijobs logs JOB")
        logs = subprocess.run(
            [sys.executable, "-m", "pijobs.cli", "logs", done, "--log-dir", str(data_dir / "logs")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert logs.returncode == 0 and '"event": "job_finished"' in logs.stdout, logs.stderr
        # A second customer's key, made while the stack runs, is kept too.
        made = _pijobs(first, "keys", "create", "second")
        assert made.returncode == 0, made.stderr
        second_key = made.stdout.strip()
        other = first.session(second_key)
        theirs = other.post(f"{first.url}/jobs", json={"digits": 50}, timeout=30).json()["job_id"]
        _wait_for(other, first.url, theirs, {"SUCCEEDED"})
        # In flight at the stop: the reaper retries it after the restart.
        body = {"function": "word-count", "params": {"text": "a b a", "pause_seconds": 3}}
        running = session.post(f"{first.url}/jobs", json=body, timeout=30).json()["job_id"]
        _wait_for(session, first.url, running, {"RUNNING"})
    finally:
        first.stop(signal.SIGINT)

    second = Up(data_dir, tmp_path / "up-2.log")
    try:
        assert (second.url, second.key) == (first.url, first.key)
        # The AWS endpoint stays too: the exports the first run printed still work for `pijobs keys`/`ops`.
        assert second.value("AWS endpoint: ") == first.value("AWS endpoint: ")
        listed = _pijobs(first, "keys", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert "second" in [key["name"] for key in json.loads(listed.stdout)["keys"]]
        assert "restored" in second.value("Data: ")
        session = second.session()
        job = _wait_for(session, second.url, done, {"SUCCEEDED"})
        assert job["result"]["sha256"] == sha256
        assert _result_sha256(session, second.url, done) == sha256
        assert second.session(second_key).get(f"{second.url}/jobs/{theirs}", timeout=30).status_code == 200
        assert session.get(f"{second.url}/jobs/{theirs}", timeout=30).status_code == 404  # still theirs only
        recovered = _wait_for(session, second.url, running, {"SUCCEEDED", "FAILED"})
        assert recovered["status"] == "SUCCEEDED" and recovered["attempts"] >= 2, recovered
        late = session.post(f"{second.url}/jobs", json={"digits": 20}, timeout=30).json()["job_id"]
        _wait_for(session, second.url, late, {"SUCCEEDED"})
        # Saved, finished, by the periodic save (a SIGKILL loses at most what came since the last one).
        deadline = time.monotonic() + TIMEOUT_S
        while not _saved_as(data_dir, late, "SUCCEEDED"):
            assert time.monotonic() < deadline, "the late job was never saved as SUCCEEDED"
            time.sleep(0.2)
    finally:
        second.stop(signal.SIGKILL)

    third = Up(data_dir, tmp_path / "up-3.log")
    try:
        session = third.session()
        assert _wait_for(session, third.url, late, {"SUCCEEDED"})["result"]
        assert len(session.get(f"{third.url}/jobs", timeout=30).json()["jobs"]) == 3
    finally:
        third.stop(signal.SIGINT)


def test_a_second_up_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = Up(tmp_path / "data", tmp_path / "up-1.log")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "pijobs.cli", "up", "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr.startswith("pijobs: ") and "is in use by another pijobs up" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.stop(signal.SIGINT)


# tgkill(2): a signal to one thread of a process, not to the process.
TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


@pytest.mark.skipif(TGKILL is None or not Path("/proc").is_dir(), reason="needs Linux's tgkill and /proc")
def test_ctrl_c_stops_up_whichever_thread_the_kernel_hands_it_to(tmp_path: Path) -> None:
    # The kernel may deliver a Ctrl-C to any thread of `pijobs up`; Python runs its handler in the main
    # thread only, so a main thread blocked for good in a wait never saw it and `up` ran on (a CI hang).
    # And `up` started with SIGINT ignored, as a shell script's background job is, still stops on it.
    up = Up(tmp_path / "data", tmp_path / "up.log", sigint=signal.SIG_IGN)
    try:
        threads = sorted(int(tid) for tid in os.listdir(f"/proc/{up.process.pid}/task"))
        other = next(tid for tid in threads if tid != up.process.pid)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(TGKILL, up.process.pid, other, signal.SIGINT) == 0, ctypes.get_errno()
        assert up.process.wait(timeout=60) == 0
        assert "Stopped." in up.lines()
    finally:
        up.stop(signal.SIGKILL)


def _pijobs(up: Up, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line with the exports ``up`` printed for the local AWS."""
    return subprocess.run(
        [sys.executable, "-m", "pijobs.cli", *args],
        env={**os.environ, **_aws_env(up)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _aws_env(up: Up) -> dict[str, str]:
    endpoint = up.value("AWS endpoint: ")  # printed for the command line in another shell
    assert endpoint, up.lines()
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
