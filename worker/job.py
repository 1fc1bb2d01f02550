"""One job's life on its instance, the same for every business function and wherever it runs.

The worker holds no AWS credentials. Everything goes through the job's worker channel (worker/channel.py,
authenticated by the token this attempt was given) and the presigned URLs it answers:

    start      -> RUNNING; the function, its parameters and limits, fresh GETs for the inputs
    heartbeat  -> progress recorded, every ``heartbeat_seconds``; a 410 means the job was cancelled (or
                  reaped): the function is stopped
    output     -> a presigned POST for exactly the result file (name, size, sha256), then the upload
    finish     -> SUCCEEDED (the platform checks the stored file first), FAILED with a code the customer
                  reads, or RETRY (the infrastructure's fault: another attempt while any remain); the
                  platform then releases the slot and deletes the job's stack

A result that cannot be stored, or inputs that cannot be fetched, give the attempt back (RETRY). A worker
that cannot reach the channel gives up after its backoff and exits: the reaper sees its heartbeat stop.
"""

from __future__ import annotations

import contextlib
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

from pijobs.shared import errors
from pijobs.shared.channel import TOKEN_ENV, FinishOutcome
from pijobs.shared.digest import file_digest
from pijobs.shared.functions import (
    FILENAME_PATTERN,
    METADATA_MAX_BYTES,
    BusinessFunction,
    JobRefusedError,
    OutputFile,
    RunContext,
    installed_functions,
)
from pijobs.shared.job_errors import JobErrorCode
from pijobs.shared.logs import bind_job, configure_logging, get_logger
from pijobs.shared.settings import WorkerSettings
from pijobs.worker.channel import AttemptEndedError, Channel, ChannelRefusedError
from pijobs.worker.inputs import Fetch, InputGrant, download_inputs, fetch_url
from pijobs.worker.upload import Post, post_file

log = get_logger(__name__)

IMDS = "http://169.254.169.254/latest"


@dataclass
class WorkerServices:
    settings: WorkerSettings
    channel: Channel
    functions: dict[str, BusinessFunction] | None = None  # None: the installed ones
    fetch: Fetch = fetch_url  # how an input's presigned GET is made
    post: Post = post_file  # how the result's presigned POST is made

    def function(self, name: str) -> BusinessFunction:
        functions = installed_functions() if self.functions is None else self.functions
        if name not in functions:
            raise errors.FunctionError(f"function {name} is not installed on this worker")
        return functions[name]


def build_services(settings: WorkerSettings, job_id: str) -> WorkerServices:
    channel = Channel(
        settings.api_url, job_id, settings.worker_token.get_secret_value(), backoff=settings.backoff()
    )
    return WorkerServices(settings=settings, channel=channel)


def settings_from_env() -> WorkerSettings:
    """The worker's settings; the token then leaves the environment, so that nothing the function runs
    (a subprocess, DuckDB's getenv) finds it there."""
    settings = WorkerSettings.from_env()
    os.environ.pop(TOKEN_ENV, None)
    return settings


def run_job(job_id: str, services: WorkerServices | None = None) -> int:
    """Run the job's attempt to its end. Exit code 0 when it SUCCEEDED."""
    configure_logging()
    bind_job(job_id)
    services = services or build_services(settings_from_env(), job_id)
    with _sigterm_raises():
        try:
            return _run(services)
        finally:
            log.info("worker_done", channel_calls=services.channel.calls, peak_rss_bytes=peak_rss_bytes())


def _run(services: WorkerServices) -> int:
    grant = _start(services)
    if grant is None:
        return 1
    try:
        output = compute_and_upload(services, grant)
    except errors.JobCancelledError:
        log.info("job_stopped", reason="the attempt ended (cancelled, timed out or reaped)")
        return 1
    except WorkerTerminatedError:
        log.warning("worker_terminated", reason="the instance is going away; the reaper decides")
        return 1
    except (errors.ResultUploadError, errors.InputUnavailableError) as exc:
        # The operator's log has the exception; the attempt goes back (another one gets fresh links).
        log.exception("attempt_given_back", code=exc.code)
        return _finish(services, FinishOutcome.RETRY, error={"code": exc.code, "message": exc.code})
    except errors.InputCorruptError as exc:
        return _finish(services, FinishOutcome.FAILED, error={"code": exc.code, "message": exc.message})
    except JobRefusedError as exc:
        log.error("job_refused", code=exc.code, error=exc.message)
        error = {"code": exc.code, "message": exc.message[:500]}
        return _finish(services, FinishOutcome.FAILED, error=error)
    except Exception:
        log.exception("job_failed")  # the operator's log has the exception; the customer gets WORKER_FAILED
        return _finish(services, FinishOutcome.FAILED, error=WORKER_FAILED)
    return _finish(services, FinishOutcome.SUCCEEDED, **output)


def _start(services: WorkerServices) -> dict[str, Any] | None:
    instance_id = services.settings.instance_id or _instance_id_from_imds()
    try:
        grant = services.channel.start(instance_id)
    except (ChannelRefusedError, errors.JobCancelledError) as exc:
        log.warning("job_not_startable", error=exc.message)
        return None
    except Exception:
        log.exception("channel_unreachable", call="start")
        return None
    log.info("job_started", instance_id=instance_id, function=grant.get("function"))
    return grant


def compute_and_upload(services: WorkerServices, grant: dict[str, Any]) -> dict[str, Any]:
    """Run the job's function in a scratch directory under a heartbeat, then upload what it wrote.
    Returns what ``finish`` tells of it: the file as declared for its upload, and its metadata."""
    function = services.function(str(grant["function"]))
    params = function.parse_params(grant["params"])
    inputs = {name: InputGrant.model_validate(value) for name, value in (grant.get("inputs") or {}).items()}
    _check_pinned(function.requested_inputs(params), inputs)
    heartbeat = Heartbeat(services.channel, services.settings.heartbeat_seconds)
    backoff = services.settings.backoff()
    with tempfile.TemporaryDirectory(prefix="pijobs-") as tmp, heartbeat:
        scratch = Path(tmp)
        paths = download_inputs(inputs, scratch, fetch=services.fetch, backoff=backoff)
        heartbeat.check()
        context = RunContext(
            job_id=str(grant["job_id"]),
            params=params,
            scratch=scratch,
            progress=heartbeat.report,
            cancelled=heartbeat.cancelled,
            inputs=paths,
            limits=function.limits_model.model_validate(grant.get("limits") or {}),
            instance_id=grant.get("instance_id"),
            memory_limit_bytes=available_memory(),
        )
        output = function.run(context)
        heartbeat.check()
        _check_output(function, output, scratch)
        stored = file_digest(output.path)
        size, sha256 = stored.bytes, stored.sha256
        log.info("function_finished", filename=output.filename, bytes=size)
        declared = {
            "filename": output.filename,
            "bytes": size,
            "sha256": sha256,
            "content_type": output.content_type,
        }
        post = services.channel.output(**declared)
        try:
            backoff.call("upload_result", lambda: services.post(post["url"], post["fields"], output.path))
        except errors.ResultUploadError:
            raise
        except Exception as exc:
            raise errors.ResultUploadError(f"the result could not be stored: {exc!r}") from exc
    log.info("result_uploaded", filename=output.filename, bytes=size, sha256=sha256)
    return {"output": declared, "metadata": dict(output.metadata)}


def _check_pinned(requested: dict[str, str], inputs: dict[str, InputGrant]) -> None:
    """The parameters' inputs are the ones pinned at submit, upload for upload."""
    pinned = {name: grant.upload_id for name, grant in inputs.items()}
    if requested != pinned:
        log.error("inputs_not_pinned", requested=sorted(requested), pinned=sorted(pinned))
        raise JobRefusedError(
            "the job's inputs were not accepted with it; submit the job again",
            code=JobErrorCode.INPUT_UNAVAILABLE.value,
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


def _finish(services: WorkerServices, outcome: FinishOutcome, **fields: Any) -> int:
    """The attempt's end, told to the platform (which then releases the slot and deletes the stack).
    0 when the job SUCCEEDED. A stored result the platform finds wrong gives the attempt back."""
    with _sigterm_ignored():
        try:
            answer = services.channel.finish(outcome.value, **fields)
        except errors.JobCancelledError:
            log.warning("job_finish_lost", reason="the attempt had ended (cancelled, timed out or reaped)")
            return 1
        except ChannelRefusedError as exc:
            if outcome is FinishOutcome.SUCCEEDED and exc.status == 409:
                log.error("result_refused", code=exc.code, error=exc.message)
                error = {"code": errors.ResultUploadError.code, "message": exc.code}
                return _finish(services, FinishOutcome.RETRY, error=error)
            log.error("job_finish_refused", status=exc.status, code=exc.code)
            return 1
        except Exception:
            log.exception("channel_unreachable", call="finish")  # the reaper takes over
            return 1
    log.info("job_finished", outcome=outcome.value, status=answer.get("status"))
    return 0 if outcome is FinishOutcome.SUCCEEDED else 1


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux counts ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


WORKER_FAILED = {
    "code": JobErrorCode.WORKER_FAILED.value,
    "message": "the job failed on its instance; it was not retried",
}
# However the last calls fare, the worker is gone this long after a shutdown signal: it never outlives its
# instance, or a killed pijobs up.
TERMINATING_EXIT_SECONDS = 7.0


def _exit_later(seconds: float) -> None:
    def _exit() -> None:
        log.warning("worker_exit_forced", after_seconds=seconds)
        os._exit(143)  # 128 + SIGTERM, as if the signal had ended it

    timer = threading.Timer(seconds, _exit)
    timer.daemon = True
    timer.start()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Shutdown sends SIGTERM: while the job runs, turn it into an exception so that the worker stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        _exit_later(TERMINATING_EXIT_SECONDS)
        raise WorkerTerminatedError(f"the instance stopped the worker (signal {signum})")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigterm_ignored() -> Iterator[None]:
    """The finish call is not interrupted by the instance going away (the exit timer still bounds it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _later(signum: int, frame: Any) -> None:
        _exit_later(TERMINATING_EXIT_SECONDS)

    previous = signal.signal(signal.SIGTERM, _later)
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
    """Reports progress over the channel while the job runs; notices that the attempt ended."""

    def __init__(self, channel: Channel, interval: float) -> None:
        self._channel = channel
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
        """Whether the attempt ended (cancelled or reaped), as of the last beat."""
        return self._cancelled.is_set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def beat(self) -> None:
        try:
            answer = self._channel.heartbeat(round(self._progress, 4), retry=False)
        except AttemptEndedError:
            self._cancelled.set()
        except Exception as exc:  # a missed beat is not fatal; the reaper allows several
            log.warning("heartbeat_failed", error=str(exc))
        else:
            if answer.get("cancelled"):
                self._cancelled.set()
