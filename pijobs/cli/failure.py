"""The command line's one convention for failures: every command returns an exit code or raises, and
``pijobs.cli.main`` turns what it raised into one line on stderr (``pijobs: ...``) and an exit code.

Exit codes: 0 done; 1 the deployment, the API or the job said no (:class:`pijobs.errors.OperationError`,
AWS's errors, a job that did not succeed); 2 the command was called wrong (:class:`pijobs.errors.UsageError`,
argparse's own); 130 interrupted.
"""

from __future__ import annotations

import errno

from pijobs.client import ApiError, UploadRefusedError, WaitTimeoutError
from pijobs.errors import UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def exit_code(exc: BaseException) -> int:
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


def describe_failure(exc: BaseException) -> str:
    """What went wrong and what to do, without a traceback (an API error adds a line per field)."""
    if isinstance(exc, ApiError):
        lines = [f"{exc.status} {exc.code}: {exc.message}"]
        lines += [
            f"  {d.get('field', '?')}: {d.get('problem', '')}" for d in exc.details if isinstance(d, dict)
        ]
        return "\n".join(lines)
    if isinstance(exc, WaitTimeoutError):
        return f"{exc}; it goes on: pijobs status {exc.job.get('job_id')}"
    if isinstance(exc, UploadRefusedError):
        return f"{exc}; nothing can use it: fix the file and upload it again"
    aws = _describe_aws(exc)
    if aws is not None:
        return aws
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        named = str(exc.strerror or "")
        return named if "--port" in named else "a port is in use: choose another with --port (0: a free one)"
    if isinstance(exc, ValueError | LookupError | RuntimeError | OSError) or type(exc).__module__.startswith(
        "pijobs"
    ):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc} (pijobs --debug ... shows where)"


def _describe_aws(exc: BaseException) -> str | None:
    try:
        from botocore import exceptions as boto
    except ImportError:  # the client alone needs no boto3
        return None
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return (
            "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(for the local stack, the exports that pijobs up prints)"
        )
    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url", "?")
        return f"cannot reach AWS at {endpoint}: check AWS_ENDPOINT_URL and the network"
    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "the call")
        return f"AWS refused {operation}: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, boto.NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION (or AWS_REGION, or a region in your AWS profile)"
    if isinstance(exc, boto.ParamValidationError):
        return f"invalid AWS request: {exc}".replace("\n", " ")
    return None
