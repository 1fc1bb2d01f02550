"""Runs the worker of each EC2 instance that a business-function stack launched, as its UserData would.

moto creates instances but runs nothing on them. The runner watches moto's EC2 for live instances tagged
``JobId`` and starts, once per instance, ``python -m pijobs.worker --job-id <JobId>`` with the environment
the instance's own UserData shim exports (the API's URL and the attempt's worker token, as CloudFormation
substituted them) and nothing of AWS: no credentials, no endpoint. When the instance is terminated (or
stopped, or vanishes) while its worker still runs, the worker's whole process group gets SIGTERM, then
SIGKILL, as a machine going away would.

The runner looks again as soon as it is woken (``wake()``: the local stack calls it on each CreateStack,
DeleteStack, RunInstances or TerminateInstances moto answers) and otherwise every ``poll_interval`` seconds.
With ``fork_workers`` the workers are forked from a warm interpreter (``pijobs.local.forkserver``) that has
imported the worker and the functions once, instead of each paying a cold interpreter's second and more; it
runs with the workers' own environment, without credentials either.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import structlog

from pijobs.local.forkserver import die_with_parent

log = structlog.get_logger(__name__)

JOB_TAG = "JobId"
KILL_GRACE_S = 3.0
_LIVE_STATES = ["pending", "running"]
_STOP_JOIN_TIMEOUT_S = 10.0
_FORK_REPLY_TIMEOUT_S = 30.0  # the server answers once it has warmed up, a few seconds at worst
WORKER_MODULE = "pijobs.worker.__main__"
WORKER_WARM = "pijobs.shared.functions:installed_functions"
# What the shim exports with a literal value (``export PIJOBS_X="value"``, after CloudFormation's
# substitution); a value computed at boot (``$(...)``) is the runner's to give (the instance id).
_SHIM_EXPORT = re.compile(r'^\s*export (PIJOBS_[A-Z0-9_]+)="([^"$`\\]*)"\s*$', re.MULTILINE)


def shim_environment(user_data: str) -> dict[str, str]:
    """The PIJOBS_* variables an instance's UserData shim exports for its worker (base64 or plain text)."""
    try:
        text = base64.b64decode(user_data, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        text = user_data
    return dict(_SHIM_EXPORT.findall(text))


class Process(Protocol):
    """What the runner needs of a worker process: a subprocess.Popen or a forked copy."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class _Worker:
    instance_id: str
    job_id: str
    process: Process
    kill_at: float | None = None  # SIGKILL deadline once SIGTERM was sent


class _ForkedProcess:
    """A worker the fork server started: its exit code comes from the server."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self._server = server
        self._pid = pid

    @property
    def pid(self) -> int:
        return self._pid

    def poll(self) -> int | None:
        return self._server.exit_code(self._pid)

    def wait(self, timeout: float | None = None) -> int:
        code = self._server.wait(self._pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(str(self._pid), timeout or 0.0)
        return code


class ForkServer:
    """The runner's end of ``python -m pijobs.local.forkserver``: spawn() asks it for a copy."""

    def __init__(self, python: str, env: dict[str, str], log_path: Path | None = None) -> None:
        self._python = python
        self._env = env
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._codes: dict[int, int] = {}
        self._pids: set[int] = set()
        self._exited = threading.Condition()
        self._request_lock = threading.Lock()
        self._broken = False  # its workers run on, new ones start cold

    def start(self) -> ForkServer:
        command = [self._python, "-m", "pijobs.local.forkserver", WORKER_MODULE, "--warm", WORKER_WARM]
        errors: IO[bytes] | int = subprocess.DEVNULL
        if self._log_path is not None:
            errors = self._log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                command,
                env=self._env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            if not isinstance(errors, int):
                errors.close()
        threading.Thread(target=self._read, name="forkserver-replies", daemon=True).start()
        return self

    def is_alive(self) -> bool:
        return not self._broken and self._process is not None and self._process.poll() is None

    def spawn(self, argv: list[str], env: dict[str, str], log: Path | None) -> _ForkedProcess:
        process = self._process
        if process is None or process.stdin is None or not self.is_alive():
            raise OSError("the fork server is not running")
        request = {"argv": argv, "env": env, "log": None if log is None else str(log)}
        with self._request_lock:
            try:
                process.stdin.write((json.dumps(request) + "\n").encode())
                process.stdin.flush()
                reply = self._replies.get(timeout=_FORK_REPLY_TIMEOUT_S)
            except (OSError, ValueError, queue.Empty) as exc:
                self._broken = True  # a late reply would pair with the next request: no next one
                raise OSError(f"the fork server did not start the worker: {exc!r}") from exc
        if "pid" not in reply:
            raise OSError(f"the fork server did not start the worker: {reply.get('error')}")
        return _ForkedProcess(self, int(reply["pid"]))

    def exit_code(self, pid: int) -> int | None:
        with self._exited:
            return self._codes.get(pid)

    def wait(self, pid: int, timeout: float | None) -> int | None:
        with self._exited:
            self._exited.wait_for(lambda: pid in self._codes, timeout)
            return self._codes.get(pid)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()  # the server ends at the end of its input
        try:
            process.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _read(self) -> None:
        process = self._process
        if process is None or process.stdout is None:
            return
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "exited" in message:
                with self._exited:
                    self._codes[int(message["exited"])] = int(message["code"])
                    self._exited.notify_all()
            else:
                if "pid" in message:
                    with self._exited:
                        self._pids.add(int(message["pid"]))
                self._replies.put(message)
        with self._exited:  # the server is gone, and its copies with it (they die with their parent)
            for pid in self._pids - set(self._codes):
                self._codes[pid] = -int(signal.SIGTERM)
            self._exited.notify_all()


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the worker's process group (it may have spawned a pool); gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class InstanceRunner:
    """Watches EC2 when woken and every ``poll_interval`` seconds; runs one worker per live ``JobId``
    instance."""

    def __init__(
        self,
        ec2_client: Any,
        *,
        env: dict[str, str],
        poll_interval: float = 0.5,
        python: str = sys.executable,
        log_dir: Path | None = None,
        fork_workers: bool = False,
    ) -> None:
        self._ec2 = ec2_client
        self._env = dict(env)
        self._poll_interval = poll_interval
        self._python = python
        self._log_dir = log_dir
        self._fork_workers = fork_workers
        self._fork_server: ForkServer | None = None
        self._wake = threading.Event()
        self._workers: dict[str, _Worker] = {}
        self._started: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def running(self) -> dict[str, int]:
        """Instance id -> pid of every worker still running."""
        with self._lock:
            workers = list(self._workers.values())
        return {w.instance_id: w.process.pid for w in workers if w.process.poll() is None}

    def started(self) -> set[str]:
        """Instance ids whose worker was started (each at most once)."""
        with self._lock:
            return set(self._started)

    def start(self) -> InstanceRunner:
        if self._thread is not None:
            return self
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        if self._fork_workers:
            server_log = None if self._log_dir is None else self._log_dir / "forkserver.log"
            self._fork_server = ForkServer(self._python, self._env, server_log).start()
        self._thread = threading.Thread(target=self._watch, name="instance-runner", daemon=True)
        self._thread.start()
        log.info("runner_started", python=self._python, poll_interval=self._poll_interval)
        return self

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout=_STOP_JOIN_TIMEOUT_S)
        self._thread = None
        with self._lock:
            workers = list(self._workers.values())
        self._kill_all(workers)
        self._reap()
        if self._fork_server is not None:
            self._fork_server.stop()
            self._fork_server = None
        log.info("runner_stopped", workers_killed=len(workers))

    def __enter__(self) -> InstanceRunner:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wake(self) -> None:
        """Look at EC2 now (an instance may have been launched or terminated), not at the next poll."""
        self._wake.set()

    def poll_once(self) -> None:
        """One round: reap exited workers, start new instances' workers, kill the gone ones'."""
        self._reap()
        with self._lock:
            workers = list(self._workers.values())
        self._escalate(workers)
        try:
            live = self._live_instances()
        except Exception as exc:  # moto restarting or slow: never kill workers on a failed read
            log.warning("runner_describe_failed", error=repr(exc))
            return
        for instance_id, instance in live.items():
            if instance_id not in self._started:
                self._launch(instance)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            if worker.instance_id not in live and worker.kill_at is None:
                self._terminate(worker)

    # --- watching -------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the look: a wake during it means look again
            try:
                self.poll_once()
            except Exception:
                log.exception("runner_poll_failed")
            self._wake.wait(self._poll_interval)

    def _live_instances(self) -> dict[str, dict[str, Any]]:
        filters = [
            {"Name": "instance-state-name", "Values": _LIVE_STATES},
            {"Name": "tag-key", "Values": [JOB_TAG]},
        ]
        live: dict[str, dict[str, Any]] = {}
        for page in self._ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    live[instance["InstanceId"]] = instance
        return live

    # --- starting -------------------------------------------------------------------------------------------

    def _launch(self, instance: dict[str, Any]) -> None:
        instance_id = instance["InstanceId"]
        job_id = _tags(instance)[JOB_TAG]
        try:
            shim = self._shim_environment(instance_id)
        except Exception as exc:  # a failed read: try again next round
            log.warning("runner_user_data_read_failed", instance_id=instance_id, error=repr(exc))
            return
        with self._lock:
            self._started.add(instance_id)  # one run per instance, even when starting fails
        env = {**self._env, **shim, "PIJOBS_INSTANCE_ID": instance_id}
        try:
            process = self._spawn(instance_id, job_id, env)
        except OSError as exc:
            log.error("worker_start_failed", instance_id=instance_id, job_id=job_id, error=repr(exc))
            return
        with self._lock:
            self._workers[instance_id] = _Worker(instance_id, job_id, process)
        log.info("worker_started", instance_id=instance_id, job_id=job_id, pid=process.pid)

    def _shim_environment(self, instance_id: str) -> dict[str, str]:
        attribute = self._ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        return shim_environment(str((attribute.get("UserData") or {}).get("Value") or ""))

    def _spawn(self, instance_id: str, job_id: str, env: dict[str, str]) -> Process:
        argv = ["--job-id", job_id]
        log_path = None if self._log_dir is None else self._log_dir / f"{instance_id}.log"
        server = self._fork_server
        if server is not None and server.is_alive():
            try:
                return server.spawn(argv, env, log_path)
            except OSError as exc:  # a cold interpreter still runs it
                log.warning("worker_fork_failed", instance_id=instance_id, error=repr(exc))
        command = [self._python, "-m", "pijobs.worker", *argv]
        output: IO[bytes] | int = subprocess.DEVNULL
        if self._log_dir is not None:
            output = (self._log_dir / f"{instance_id}.log").open("ab")
        try:
            return subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a pool it spawns dies with it
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            if not isinstance(output, int):
                output.close()  # the child holds its own descriptor

    # --- stopping -------------------------------------------------------------------------------------------

    def _terminate(self, worker: _Worker) -> None:
        if worker.process.poll() is not None:
            return
        # Routine at the end of every job (its stack is deleted under it); worker_exited follows at info.
        log.debug(
            "worker_killed", instance_id=worker.instance_id, job_id=worker.job_id, reason="instance_gone"
        )
        worker.kill_at = time.monotonic() + KILL_GRACE_S
        _signal_group(worker.process.pid, signal.SIGTERM)

    def _escalate(self, workers: Iterable[_Worker]) -> None:
        now = time.monotonic()
        for worker in workers:
            if worker.kill_at is not None and now >= worker.kill_at and worker.process.poll() is None:
                log.warning("worker_sigkill", instance_id=worker.instance_id, pid=worker.process.pid)
                _signal_group(worker.process.pid, signal.SIGKILL)

    def _kill_all(self, workers: list[_Worker]) -> None:
        alive = [w for w in workers if w.process.poll() is None]
        for worker in alive:
            _signal_group(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        for worker in alive:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(worker.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=KILL_GRACE_S)

    def _reap(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            code = worker.process.poll()
            if code is None:
                continue
            _signal_group(worker.process.pid, signal.SIGKILL)  # leftovers of the group, e.g. a pool
            with self._lock:
                self._workers.pop(worker.instance_id, None)
            log.info("worker_exited", instance_id=worker.instance_id, job_id=worker.job_id, returncode=code)
