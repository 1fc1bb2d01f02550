"""One job's life on its instance, the same for every business function.

PROVISIONING -> RUNNING, heartbeat and progress while the function's ``run`` computes, its output to S3 with
its sha256, SUCCEEDED (or FAILED with a reason a customer may read), then always: delete the job's own
stack and release the capacity slot.

S3 and DynamoDB calls wait out transient failures (``WorkerSettings.backoff``). A result that still cannot
be stored is the infrastructure's failure, not the job's: the job goes back to QUEUED while attempts remain
(parked for the next admission), else FAILED ``result_upload_failed``. A result whose job was cancelled or
reaped meanwhile is deleted again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import signal
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pijobs.shared import aws, errors
from pijobs.shared.attempts import failure_fields, status_after_failure
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.digest import file_digest
from pijobs.shared.functions import (
    FILENAME_PATTERN,
    METADATA_MAX_BYTES,
    BusinessFunction,
    JobRefusedError,
    OutputFile,
    RunContext,
    installed_functions,
    result_key,
)
from pijobs.shared.logs import bind_job, configure_logging, get_logger
from pijobs.shared.models import JobRecord, ResultInfo, isoformat, utcnow
from pijobs.shared.settings import WorkerSettings
from pijobs.shared.stacks import StackLauncher
from pijobs.shared.status import JobStatus
from pijobs.shared.store import JobStore, park_fields
from pijobs.worker.inputs import Fetch, download_inputs, fetch_url

log = get_logger(__name__)

IMDS = "http://169.254.169.254/latest"


@dataclass
class WorkerServices:
    settings: WorkerSettings
    store: JobStore
    capacity: CapacityCounter
    stacks: StackLauncher
    s3: Any
    functions: dict[str, BusinessFunction] | None = None  # None: the installed ones
    fetch: Fetch = fetch_url  # how an input's presigned GET is made

    def function(self, name: str) -> BusinessFunction:
        functions = installed_functions() if self.functions is None else self.functions
        if name not in functions:
            raise errors.FunctionError(f"function {name} is not installed on this worker")
        return functions[name]


def build_services(settings: WorkerSettings) -> WorkerServices:
    ddb = aws.client("dynamodb")
    return WorkerServices(
        settings=settings,
        store=JobStore(ddb, settings.table_name),
        capacity=CapacityCounter(ddb, settings.table_name, default_limit=settings.max_active_stacks),
        stacks=StackLauncher(aws.client("cloudformation")),
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
    except errors.ResultUploadError:
        log.exception("result_upload_failed")  # the exception is for the operator; the customer reads a code
        _give_attempt_back(services, job, code=errors.ResultUploadError.code)
        return 1
    except errors.InputUnavailableError:
        # An expired or refused link: another attempt is dispatched with fresh ones.
        log.exception("input_unavailable")
        _give_attempt_back(services, job, code=errors.InputUnavailableError.code)
        return 1
    except errors.InputCorruptError as exc:
        _finish(services, job, JobStatus.FAILED, error={"code": exc.code, "message": exc.message})
        return 1
    except JobRefusedError as exc:
        log.error("job_refused", code=exc.code, error=exc.message)
        _finish(services, job, JobStatus.FAILED, error={"code": exc.code, "message": exc.message[:500]})
        return 1
    except Exception:
        log.exception("job_failed")  # the operator's log has the exception; the customer gets WORKER_FAILED
        _finish(services, job, JobStatus.FAILED, error=WORKER_FAILED)
        return 1
    return 0 if _succeed(services, job, result) else 1


def _start(services: WorkerServices, job_id: str) -> JobRecord | None:
    instance_id = services.settings.instance_id or _instance_id_from_imds()
    now = isoformat(utcnow())
    try:
        job = services.settings.backoff().call(
            "start_job",
            lambda: services.store.transition(
                job_id,
                JobStatus.PROVISIONING,
                JobStatus.RUNNING,
                started_at=now,
                heartbeat_at=now,
                progress=0.0,
                instance_id=instance_id,
                # The dispatcher records it too, but that write loses if this one comes first.
                stack_name=services.settings.stack_name,
            ),
        )
    except errors.StaleStatusError:
        current = services.store.get(job_id)
        log.warning("job_not_startable", status=current.status.value)
        return None
    log.info("job_started", instance_id=instance_id, function=job.function, version=job.version)
    return job


def compute_and_upload(services: WorkerServices, job: JobRecord) -> ResultInfo:
    """Run the job's function in a scratch directory under a heartbeat, then upload what it wrote."""
    function = services.function(job.function)
    params = function.parse_params(job.params)
    _check_pinned(function.requested_inputs(params), job)
    heartbeat = Heartbeat(services.store, job.job_id, services.settings.heartbeat_seconds)
    with tempfile.TemporaryDirectory(prefix="pijobs-") as tmp, heartbeat:
        scratch = Path(tmp)
        inputs = download_inputs(job, scratch, fetch=services.fetch, backoff=services.settings.backoff())
        heartbeat.check()
        context = RunContext(
            job_id=job.job_id,
            params=params,
            scratch=scratch,
            progress=heartbeat.report,
            cancelled=heartbeat.cancelled,
            inputs=inputs,
            limits=function.limits_model.model_validate(job.limits or {}),
            instance_id=job.instance_id,
            memory_limit_bytes=available_memory(),
        )
        output = function.run(context)
        heartbeat.check()
        _check_output(function, output, scratch)
        stored = file_digest(output.path)
        size, sha256 = stored.bytes, stored.sha256
        log.info("function_finished", filename=output.filename, bytes=size)
        key = result_key(job.owner, job.job_id, output.filename)
        try:
            services.settings.backoff().call(
                "upload_result",
                lambda: services.s3.upload_file(
                    str(output.path),
                    services.settings.results_bucket,
                    key,
                    ExtraArgs={"ContentType": output.content_type},
                ),
            )
        except Exception as exc:
            raise errors.ResultUploadError(f"the result could not be stored: {exc}") from exc
    log.info("result_uploaded", key=key, bytes=size, sha256=sha256)
    return ResultInfo(
        bucket=services.settings.results_bucket,
        key=key,
        bytes=size,
        sha256=sha256,
        content_type=output.content_type,
        metadata=dict(output.metadata),
    )


def _check_pinned(requested: dict[str, str], job: JobRecord) -> None:
    """The parameters' inputs are the ones pinned at submit, upload for upload."""
    pinned = {name: pin.upload_id for name, pin in (job.inputs or {}).items()}
    if requested != pinned:
        log.error("inputs_not_pinned", requested=sorted(requested), pinned=sorted(pinned))
        raise JobRefusedError(
            "the job's inputs were not accepted with it; submit the job again", code="input_unavailable"
        )


def _check_output(function: BusinessFunction, output: object, scratch: Path) -> None:
    """What ``run`` returned is a file it wrote in its scratch directory, under a plain name."""
    name = function.name
    if not isinstance(output, OutputFile):
        raise errors.FunctionError(f"function {name} returned {type(output).__name__}, not an OutputFile")
    if not FILENAME_PATTERN.fullmatch(output.filename):
        raise errors.FunctionError(f"function {name} named its output {output.filename!r}")
    path = output.path.resolve()
    if not path.is_file() or scratch.resolve() not in path.parents:
        raise errors.FunctionError(f"function {name} returned {path}, not a file in its scratch directory")
    try:
        encoded = json.dumps(dict(output.metadata), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise errors.FunctionError(f"function {name} returned metadata that is not JSON") from exc
    if len(encoded) > METADATA_MAX_BYTES:
        raise errors.FunctionError(f"function {name} returned {len(encoded)} bytes of metadata")


def _finish(services: WorkerServices, job: JobRecord, status: JobStatus, **fields: Any) -> JobRecord | None:
    """RUNNING -> ``status``; None when the job is no longer RUNNING (cancelled or reaped meanwhile).

    The attempt's input links go with it: they were for this instance only (a next attempt gets its own)."""
    fields = {"input_urls": None, **fields}
    try:
        finished = services.settings.backoff().call(
            "finish_job", lambda: services.store.transition(job.job_id, JobStatus.RUNNING, status, **fields)
        )
    except errors.StaleStatusError:
        log.warning("job_finish_lost", status=services.store.get(job.job_id).status.value)
        return None
    log.info("job_finished", status=status.value, peak_rss_bytes=peak_rss_bytes())
    return finished


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux counts ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _succeed(services: WorkerServices, job: JobRecord, result: ResultInfo) -> bool:
    """SUCCEEDED with the uploaded result; if the job lost that race, its file does not stay behind."""
    if _finish(services, job, JobStatus.SUCCEEDED, result=result, progress=1.0) is not None:
        return True
    current = services.store.get(job.job_id)
    if current.status is JobStatus.SUCCEEDED and current.result and current.result.key == result.key:
        return True  # a retried write found its first try done
    if not current.status.is_terminal:
        # Reaped and queued again: a later attempt writes the same key and must not find it deleted under it.
        log.warning("result_left_for_next_attempt", status=current.status.value, key=result.key)
        return False
    try:
        services.settings.backoff().call(
            "delete_result", lambda: services.s3.delete_object(Bucket=result.bucket, Key=result.key)
        )
        log.info("result_deleted", status=current.status.value, key=result.key)
    except Exception:
        log.exception("result_delete_failed", key=result.key)  # the bucket's expiry rule removes it later
    return False


def _give_attempt_back(services: WorkerServices, job: JobRecord, *, code: str) -> None:
    """An infrastructure failure on the instance: QUEUED while attempts remain, else FAILED.

    The worker sends no message (the instance role cannot): a job queued again goes straight back to the
    waiting index, at the front (the fair-share clock's present), and the admission tick, which the reaper
    restarts if none is running, admits it once a slot is free (docs/scheduling.md).
    """
    target = status_after_failure(job.attempts, services.settings.max_attempts)
    fields = failure_fields(job.attempts, code)
    if target is JobStatus.QUEUED:
        clock = (services.capacity.state() or {}).get("clock", 0.0)
        fields |= park_fields(job.job_id, clock)
    if _finish(services, job, target, **fields, stack_name=None, stack_id=None, instance_id=None) is None:
        return
    if target is JobStatus.QUEUED:
        log.warning("job_retrying", code=code, attempts=job.attempts)
    else:
        log.error("job_failed_for_good", code=code, attempts=job.attempts)


def _clean_up(services: WorkerServices, job_id: str) -> None:
    """Whatever happened: delete this job's own stack, then give the slot back.

    In that order, the stacks that still count as live never outnumber MaxActiveStacks: the next job's stack
    can only start once this one is deleting. DeleteStack returns at once (the instance ends later); a
    shutdown signal meanwhile waits until both calls are made.
    """
    backoff = services.settings.backoff()
    if _TERMINATING.is_set():  # the instance is going away: a few seconds of retries, not minutes
        backoff = dataclasses.replace(
            backoff, total_seconds=min(backoff.total_seconds, TERMINATING_RETRY_SECONDS)
        )
    with _sigterm_ignored():
        try:
            log.info("stack_delete_requested", stack_name=services.settings.stack_name)
            backoff.call("delete_stack", lambda: services.stacks.delete(services.settings.stack_name))
        finally:
            backoff.call("release_slot", lambda: services.capacity.release(job_id))


# Set once a shutdown signal arrived: the clean-up then retries briefly (the machine, or locally pijobs up,
# is going away; the reaper deletes what a worker could not).
_TERMINATING = threading.Event()
TERMINATING_RETRY_SECONDS = 5.0
# ... and however the calls fare (each AWS client also retries a refused connection on its own), the worker
# is gone this long after the signal: it never outlives its instance, or a killed pijobs up.
TERMINATING_EXIT_SECONDS = 7.0


def _exit_later(seconds: float) -> None:
    def _exit() -> None:
        log.warning("worker_exit_forced", after_seconds=seconds)
        os._exit(143)  # 128 + SIGTERM, as if the signal had ended it

    timer = threading.Timer(seconds, _exit)
    timer.daemon = True
    timer.start()


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


WORKER_FAILED = {"code": "worker_failed", "message": "the job failed on its instance; it was not retried"}


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Shutdown sends SIGTERM: while the job runs, turn it into an exception so it is cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        _TERMINATING.set()
        _exit_later(TERMINATING_EXIT_SECONDS)
        raise WorkerTerminatedError(f"the instance stopped the worker (signal {signum})")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigterm_ignored() -> Iterator[None]:
    """The two calls of the clean-up are not interrupted by the instance going away."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
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

    def cancelled(self) -> bool:
        """Whether the job is no longer RUNNING (cancelled or reaped), as of the last beat."""
        return self._cancelled.is_set()

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
