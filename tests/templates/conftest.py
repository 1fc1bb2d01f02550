"""Fixtures for the template tests: moto in-process, both templates deployed the way `pijobs up` does."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Clients of one in-process moto account (no endpoint, fake credentials)."""
    from moto import mock_aws

    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with warnings.catch_warnings(), mock_aws():
        # moto warns once per resource type its CloudFormation skips (API Gateway Stage, alarms, ...).
        warnings.simplefilter("ignore", UserWarning)
        yield {
            name: boto3.client(name, region_name=REGION)
            for name in ("cloudformation", "s3", "ec2", "iam", "lambda", "sqs", "dynamodb", "apigateway")
        }
