"""The one place that creates boto3 clients.

boto3 itself honours ``AWS_ENDPOINT_URL``, so the same code talks to AWS or to the local moto server. boto3
is imported when the first client is made: the worker, which holds no credentials and makes no AWS call,
imports the helpers below without it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()


def client(service: str) -> Any:
    """A client for ``service`` bound to the current endpoint and region (cached per pair)."""
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _cached_client(service, endpoint, region)


def presigning_s3_client() -> Any:
    """An S3 client whose presigned URLs are SigV4 (an expiry of their own, ``X-Amz-Expires``; SigV2 query
    signing is legacy and refused in newer regions)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _cached_client("s3", endpoint, region, "s3v4")


@lru_cache(maxsize=64)
def _cached_client(service: str, endpoint: str | None, region: str, signature: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
    if signature is not None:
        config = config.merge(Config(signature_version=signature))
    with _lock:  # boto3's default session is not thread-safe while it creates clients
        session = boto3.session.Session(region_name=region)
        return session.client(service, endpoint_url=endpoint, config=config)


def conditional_write(write: Callable[[], T]) -> T | None:
    """``write()``, a DynamoDB call with a condition; None when the condition did not hold (the caller decides
    what that means: lost a race, already done, stale). Any other error is raised."""
    try:
        return write()
    except Exception as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return None
        raise


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError, or '' for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
