"""The CloudFormation adapter: at most one stack per job, named after it."""

from __future__ import annotations

from typing import Any

from shared.aws import error_code

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


def stack_name_for(job_id: str) -> str:
    return f"{STACK_PREFIX}{job_id}"


class StackLauncher:
    def __init__(
        self,
        client: Any,
        *,
        template_url: str,
        role_arn: str | None = None,
        fixed_parameters: dict[str, str] | None = None,
    ) -> None:
        self._cfn = client
        self._template_url = template_url
        self._role_arn = role_arn
        self._fixed = dict(fixed_parameters or {})

    def create(self, job_id: str, parameters: dict[str, str], tags: dict[str, str]) -> str:
        """Create the job's stack and return its id; a stack that exists already is the same stack."""
        name = stack_name_for(job_id)
        request: dict[str, Any] = {
            "StackName": name,
            "TemplateURL": self._template_url,
            "Parameters": [
                {"ParameterKey": k, "ParameterValue": v} for k, v in {**self._fixed, **parameters}.items()
            ],
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items() if v],
            "ClientRequestToken": job_id,
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
