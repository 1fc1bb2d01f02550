"""One job's life on its instance.

PROVISIONING -> RUNNING, heartbeat and progress while computing, result to S3, SUCCEEDED (or FAILED with a
reason), then always: release the capacity slot and delete the job's own stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from shared import aws, errors
from shared.capacity import CapacityCounter
from shared.logs import bind_job, configure_logging, get_logger
from shared.models import JobRecord, ResultInfo, isoformat, utcnow
from shared.settings import WorkerSettings
from shared.stacks import StackLauncher
from shared.status import JobStatus
from shared.store import JobStore
from worker.pi import PiTooLargeError, compute_pi

log = get_logger(__name__)

IMDS = "http://169.254.169.254/latest"


@dataclass
class WorkerServices:
    settings: WorkerSettings
    store: JobStore
    capacity: CapacityCounter
    stacks: StackLauncher
    s3: Any


def build_services(settings: WorkerSettings) -> WorkerServices:
    ddb = aws.client("dynamodb")
    return WorkerServices(
        settings=settings,
        store=JobStore(ddb, settings.table_name),
        capacity=CapacityCounter(ddb, settings.table_name, default_limit=settings.max_active_stacks),
        stacks=StackLauncher(aws.client("cloudformation"), template_url="-"),
        s3=aws.client("s3"),
    )


def run_job(job_id: str, services: WorkerServices | None = None) -> int:
    """Run the job to a terminal state. Exit code 0 when it SUCCEEDED."""
    configure_logging()
    bind_job(job_id)
    services = services or build_services(WorkerSettings.from_env())
    with _sigterm_raises():
        try:
            return _run(services, job_id)
        finally:
            _clean_up(services, job_id)


def _run(services: WorkerServices, job_id: str) -> int:
    job = _start(services, job_id)
    if job is None:
        return 1
    try:
        result = compute_and_upload(services, job)
    except errors.JobCancelledError:
        log.info("job_stopped", reason="the job is no longer RUNNING (cancelled or reaped)")
        return 1
    except WorkerTerminatedError:
        log.warning("worker_terminated", reason="the instance is going away; the reaper decides")
        return 1
    except PiTooLargeError as exc:
        log.error("job_too_large", error=str(exc))
        _finish(services, job, JobStatus.FAILED, error={"code": "too_large", "message": str(exc)})
        return 1
    except Exception as exc:
        log.exception("job_failed")
        _finish(services, job, JobStatus.FAILED, error={"code": "worker_failed", "message": _reason(exc)})
        return 1
    _finish(services, job, JobStatus.SUCCEEDED, result=result, progress=1.0)
    return 0


def _start(services: WorkerServices, job_id: str) -> JobRecord | None:
    instance_id = services.settings.instance_id or _instance_id_from_imds()
    now = isoformat(utcnow())
    try:
        job = services.store.transition(
            job_id,
            JobStatus.PROVISIONING,
            JobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            progress=0.0,
            instance_id=instance_id,
        )
    except errors.StaleStatusError:
        current = services.store.get(job_id)
        log.warning("job_not_startable", status=current.status.value)
        return None
    log.info("job_started", instance_id=instance_id, digits=job.digits)
    return job


def compute_and_upload(services: WorkerServices, job: JobRecord) -> ResultInfo:
    key = f"results/{job.owner}/{job.job_id}/pi-{job.digits}.txt"
    heartbeat = Heartbeat(services.store, job.job_id, services.settings.heartbeat_seconds)
    with tempfile.TemporaryDirectory(prefix="pijobs-") as tmp, heartbeat:
        path = Path(tmp) / "result.txt"
        with path.open("wb") as raw:
            out = HashingWriter(raw)
            out.write(_header(job).encode())
            compute_pi(  # HashingWriter is a BinaryIO in all that compute_pi uses: write and flush
                job.digits,
                out,  # type: ignore[arg-type]
                progress=heartbeat.report,
                memory_limit_bytes=available_memory(),
            )
            out.write(b"\n")
        heartbeat.check()
        services.s3.upload_file(
            str(path), services.settings.results_bucket, key, ExtraArgs={"ContentType": "text/plain"}
        )
    log.info("result_uploaded", key=key, bytes=out.bytes, sha256=out.hexdigest())
    return ResultInfo(
        bucket=services.settings.results_bucket, key=key, bytes=out.bytes, sha256=out.hexdigest()
    )


def _header(job: JobRecord) -> str:
    instance = job.instance_id or "unknown"
    return f"InstanceId: {instance}\nTimestamp: {isoformat(utcnow())}\nDigits: {job.digits}\n"


def _finish(services: WorkerServices, job: JobRecord, status: JobStatus, **fields: Any) -> None:
    try:
        services.store.transition(job.job_id, JobStatus.RUNNING, status, **fields)
        log.info("job_finished", status=status.value)
    except errors.StaleStatusError:
        log.warning("job_finish_lost", status=services.store.get(job.job_id).status.value)


def _clean_up(services: WorkerServices, job_id: str) -> None:
    """Whatever happened: give the slot back and delete this job's own stack (last: it ends the instance)."""
    try:
        services.capacity.release(job_id)
    finally:
        log.info("stack_delete_requested", stack_name=services.settings.stack_name)
        services.stacks.delete(services.settings.stack_name)


class WorkerTerminatedError(Exception):
    """The instance is shutting down under the worker (deadline or termination)."""


def available_memory() -> int | None:
    """What the instance can still give the computation (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Shutdown sends SIGTERM: while the job runs, turn it into an exception so it is cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise WorkerTerminatedError(f"the instance stopped the worker (signal {signum})")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _instance_id_from_imds() -> str | None:
    """The instance id from IMDSv2 (token first); None off EC2."""
    try:
        token_request = urllib.request.Request(
            f"{IMDS}/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        with urllib.request.urlopen(token_request, timeout=1) as response:
            token = response.read().decode()
        id_request = urllib.request.Request(
            f"{IMDS}/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(id_request, timeout=1) as response:
            return str(response.read().decode())
    except OSError:
        return None


class HashingWriter:
    """A binary writer that counts and hashes what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._sha.update(data)
        self.bytes += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class Heartbeat:
    """Writes heartbeat and progress to the record while the job runs; notices cancellation."""

    def __init__(self, store: JobStore, job_id: str, interval: float) -> None:
        self._store = store
        self._job_id = job_id
        self._interval = interval
        self._progress = 0.0
        self._stop = threading.Event()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def report(self, fraction: float) -> None:
        """The engine's progress callback: records the fraction and aborts a cancelled job."""
        self._progress = max(self._progress, min(1.0, fraction))
        self.check()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise errors.JobCancelledError("the job was cancelled")

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def beat(self) -> None:
        try:
            self._store.update_fields(
                self._job_id,
                JobStatus.RUNNING,
                heartbeat_at=isoformat(utcnow()),
                progress=round(self._progress, 4),
            )
        except errors.StaleStatusError:
            self._cancelled.set()
        except Exception as exc:  # a missed beat is not fatal; the reaper allows several
            log.warning("heartbeat_failed", error=str(exc))
