"""The CloudFormation adapter: at most one stack per job, named after it."""

from __future__ import annotations

from typing import Any

from pijobs.shared.aws import error_code
from pijobs.shared.ids import is_id

STACK_PREFIX = "pijob-"
FAILED_STACK_STATES = frozenset(
    {
        "CREATE_FAILED",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_FAILED",
        "ROLLBACK_COMPLETE",
        "DELETE_FAILED",
        "UPDATE_ROLLBACK_FAILED",
    }
)


_STACK_STATUSES = (
    "CREATE_IN_PROGRESS",
    "CREATE_FAILED",
    "CREATE_COMPLETE",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_FAILED",
    "ROLLBACK_COMPLETE",
    "DELETE_IN_PROGRESS",
    "DELETE_FAILED",
    "DELETE_COMPLETE",
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
)


def stack_name_for(job_id: str, attempt: int | None) -> str:
    """One stack per job and attempt: a retry never collides with the previous attempt's stack while it is
    still being deleted. (None: a stack named before attempts were part of the name.)"""
    return f"{STACK_PREFIX}{job_id}" if attempt is None else f"{STACK_PREFIX}{job_id}-{attempt}"


def attempt_of(stack_name: str) -> int | None:
    """The attempt in a pijobs stack name, or None when it names none."""
    _, _, attempt = stack_name[len(STACK_PREFIX) :].partition("-")
    return int(attempt) if attempt.isdigit() else None


def job_id_of(stack_name: str) -> str | None:
    """The job id in a pijobs stack name, or None for any other stack."""
    if not stack_name.startswith(STACK_PREFIX):
        return None
    job_id = stack_name[len(STACK_PREFIX) :].split("-", 1)[0]
    return job_id if is_id(job_id) else None


class StackLauncher:
    def __init__(self, client: Any, *, role_arn: str | None = None) -> None:
        self._cfn = client
        self._role_arn = role_arn

    def create(self, name: str, template_url: str, parameters: dict[str, str], tags: dict[str, str]) -> str:
        """Create the stack and return its id; a stack of that name that exists already is the same stack."""
        request: dict[str, Any] = {
            "StackName": name,
            "TemplateURL": template_url,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items() if v],
            "ClientRequestToken": name,
            "OnFailure": "DELETE",
        }
        if self._role_arn:
            request["RoleARN"] = self._role_arn
        try:
            return str(self._cfn.create_stack(**request)["StackId"])
        except Exception as exc:
            if error_code(exc) != "AlreadyExistsException":
                raise
        return self.stack_id(name) or name

    def stack_id(self, name: str) -> str | None:
        stack = self.describe(name)
        return None if stack is None else str(stack["StackId"])

    def list_job_stacks(self) -> list[dict[str, Any]]:
        """Every pijobs stack that is not deleted yet (name, id, status)."""
        live = [s for s in _STACK_STATUSES if s != "DELETE_COMPLETE"]
        stacks: list[dict[str, Any]] = []
        for page in self._cfn.get_paginator("list_stacks").paginate(StackStatusFilter=live):
            stacks.extend(s for s in page.get("StackSummaries", []) if job_id_of(s["StackName"]))
        return stacks

    def describe(self, name: str) -> dict[str, Any] | None:
        try:
            stacks = self._cfn.describe_stacks(StackName=name)["Stacks"]
        except Exception as exc:
            if error_code(exc) == "ValidationError":  # "Stack with id ... does not exist"
                return None
            raise
        return stacks[0] if stacks else None

    def delete(self, name: str) -> None:
        try:
            self._cfn.delete_stack(StackName=name)
        except Exception as exc:
            if error_code(exc) != "ValidationError":
                raise
