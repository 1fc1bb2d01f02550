"""Waiting out transient failures: retried within the time budget, anything else raised at once."""

from __future__ import annotations

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError

from pijobs.shared.retry import Backoff, is_transient


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def _upload_failed(cause: Exception) -> S3UploadFailedError:
    try:
        raise cause
    except Exception as exc:
        try:
            raise S3UploadFailedError(f"Failed to upload: {exc}")  # what boto3 does
        except S3UploadFailedError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("ProvisionedThroughputExceededException", 400),
        _client_error("ThrottlingException", 400),
        _client_error("SlowDown", 503),
        _client_error("AnythingElse", 500),
        EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"),
        _upload_failed(_client_error("SlowDown", 503)),
    ],
)
def test_throttling_server_errors_and_lost_connections_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("AccessDenied", 403),
        _client_error("ConditionalCheckFailedException", 400),
        _upload_failed(_client_error("NoSuchBucket", 404)),
        ValueError("a bug"),
    ],
)
def test_refusals_and_bugs_are_not_transient(exc: Exception) -> None:
    assert not is_transient(exc)


class Flaky:
    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "done"


def test_a_transient_failure_is_retried_with_growing_jittered_waits() -> None:
    waits: list[float] = []
    backoff = Backoff(base_seconds=1, cap_seconds=3, total_seconds=100, sleep=waits.append)
    call = Flaky(4, _client_error("SlowDown", 503))

    assert backoff.call("op", call) == "done"

    assert call.calls == 5 and len(waits) == 4
    assert [0 <= w <= limit for w, limit in zip(waits, [1, 2, 3, 3], strict=True)] == [True] * 4


def test_a_failure_that_outlasts_the_budget_is_raised() -> None:
    backoff = Backoff(base_seconds=0.001, cap_seconds=0.001, total_seconds=0.05)
    call = Flaky(10**9, _client_error("SlowDown", 503))

    with pytest.raises(ClientError):
        backoff.call("op", call)

    assert call.calls > 1


def test_a_refusal_is_raised_at_once() -> None:
    call = Flaky(1, _client_error("AccessDenied", 403))

    with pytest.raises(ClientError):
        Backoff(base_seconds=0, cap_seconds=0, total_seconds=100).call("op", call)

    assert call.calls == 1
