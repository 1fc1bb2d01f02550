"""The compute backend: where one attempt of a job runs, behind launch, describe and destroy.

The dispatcher launches an attempt, the reaper describes what is running, the lifecycle destroys an
attempt's infrastructure when the attempt ends; none of them names a stack or an instance. The adapter here
is CloudFormation + EC2 (``CloudFormationBackend``: one stack per attempt from the function's versioned
template). The embedded default runs the same adapter against moto, and its instance runner starts the
worker an instance would. The worker needs nothing of AWS (docs/security.md), so it is the same code
wherever it runs: another backend (Fargate, say) is another adapter of ``ComputeBackend``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from pijobs.shared.stacks import FAILED_STACK_STATES, StackLauncher, attempt_of, job_id_of, stack_name_for


class Health(str, Enum):
    LIVE = "live"  # being created, or running
    FAILED = "failed"  # could not be created, or broke: the attempt cannot succeed on it
    ENDING = "ending"  # being destroyed


@dataclass(frozen=True)
class Infrastructure:
    """One attempt's infrastructure as the backend sees it."""

    job_id: str
    attempt: int | None  # None: named before attempts were part of the name
    handle: str  # the backend's own name for it (a stack's name)
    health: Health
    reason: str = ""


@dataclass(frozen=True)
class LaunchRequest:
    job_id: str
    attempt: int
    owner: str
    cost_center: str | None
    function: str
    version: str
    parameters: Mapping[str, str]  # the platform's and the function's (whitelisted), secrets among them


@dataclass(frozen=True)
class Launched:
    handle: str  # kept on the record (``stack_name``)
    infrastructure_id: str  # kept on the record (``stack_id``)


class ComputeBackend(Protocol):
    def launch(self, request: LaunchRequest) -> Launched:
        """Start the attempt's infrastructure; launching the same attempt twice is the same launch."""

    def describe(self) -> list[Infrastructure]:
        """Every job attempt's infrastructure that is not gone yet."""

    def destroy(self, job_id: str, attempt: int | None) -> None:
        """End the attempt's infrastructure (its instance goes with it); idempotent."""


class CloudFormationBackend:
    """One stack per attempt, ``pijob-<job id>-<attempt>``, from the function's template at the job's
    version (``template_url``), created with the platform's CloudFormation service role."""

    def __init__(self, stacks: StackLauncher, template_url: Callable[[str, str], str] | None = None) -> None:
        self._stacks = stacks
        self._template_url = template_url

    def launch(self, request: LaunchRequest) -> Launched:
        if self._template_url is None:
            raise RuntimeError("this backend was made without templates: it cannot launch")
        name = stack_name_for(request.job_id, request.attempt)
        stack_id = self._stacks.create(
            name,
            self._template_url(request.function, request.version),
            dict(request.parameters),
            {"JobId": request.job_id, "Owner": request.owner, "CostCenter": request.cost_center or ""},
        )
        return Launched(name, stack_id)

    def describe(self) -> list[Infrastructure]:
        found = []
        for stack in self._stacks.list_job_stacks():
            name, status = stack["StackName"], stack["StackStatus"]
            job_id = job_id_of(name)
            if job_id is None:
                continue
            health = Health.LIVE
            if status in FAILED_STACK_STATES:
                health = Health.FAILED
            elif status == "DELETE_IN_PROGRESS":
                health = Health.ENDING
            reason = f"the job's stack is {status} {stack.get('StackStatusReason', '')}".strip()
            found.append(Infrastructure(job_id, attempt_of(name), name, health, reason))
        return found

    def destroy(self, job_id: str, attempt: int | None) -> None:
        self._stacks.delete(stack_name_for(job_id, attempt))
