"""Runs after every other e2e module: when all jobs are finished, nothing of theirs is left running."""

from __future__ import annotations

import time

import pytest

from pijobs.local.stack import LocalStack
from tests.e2e.test_http import Client

pytestmark = pytest.mark.e2e


def test_nothing_is_left_running_after_the_jobs(local_stack: LocalStack) -> None:
    """Every job is terminal, and no business-function stack, running instance or worker remains."""
    alice = Client(local_stack, local_stack.api_key)
    jobs = alice.get("/jobs?limit=100").json()["jobs"]
    for job in jobs:
        alice.wait(job["job_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stacks = [
            s["StackName"]
            for s in local_stack.client("cloudformation").describe_stacks()["Stacks"]
            if s["StackName"].startswith("pijob-") and s["StackStatus"] != "DELETE_COMPLETE"
        ]
        reservations = local_stack.client("ec2").describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )["Reservations"]
        if not stacks and not reservations and not local_stack.runner.running():
            break
        time.sleep(0.5)
    assert stacks == [] and reservations == []
    assert local_stack.runner.running() == {}
