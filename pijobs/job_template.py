"""The invariants of a job template, checked before `pijobs package` ships a function's template.

Whatever a function declares, a job's instance must stay one the platform can vouch for: no credentials (no
instance profile, no IAM role or instance profile of its own), no key pair, no inbound rule, IMDSv2 only with
a hop limit of 1 (through a launch template), terminated when it shuts down, and the worker token and the
artifact URL NoEcho. Each violation names the resource (docs/security.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pijobs.shared.errors import PijobsError

NO_ECHO_PARAMETERS = ("WorkerToken", "WorkerArtifactUrl")
CREDENTIAL_TYPES = frozenset({"AWS::IAM::InstanceProfile", "AWS::IAM::Role", "AWS::IAM::User"})


class JobTemplateError(PijobsError):
    code = "job_template_invalid"


def violations(template: dict[str, Any]) -> list[str]:
    """What breaks an invariant, one line per resource (empty: none)."""
    found: list[str] = []
    resources = template.get("Resources") or {}
    templates = {
        name: (r.get("Properties") or {}).get("LaunchTemplateData") or {}
        for name, r in resources.items()
        if r.get("Type") == "AWS::EC2::LaunchTemplate"
    }
    for name, resource in resources.items():
        kind = resource.get("Type", "")
        properties = resource.get("Properties") or {}
        if kind in CREDENTIAL_TYPES:
            found.append(f"{name}: a {kind} gives the instance credentials")
        if kind == "AWS::EC2::SecurityGroupIngress" or properties.get("SecurityGroupIngress"):
            found.append(f"{name}: an inbound rule (a job's instance has no way in)")
        if kind == "AWS::EC2::Instance":
            found.extend(_instance_violations(name, properties, templates))
        if kind == "AWS::EC2::LaunchTemplate":
            data = templates[name]
            if "IamInstanceProfile" in data:
                found.append(f"{name}: an instance profile (the instance holds no credentials)")
            if "KeyName" in data:
                found.append(f"{name}: a key pair")
            options = data.get("MetadataOptions") or {}
            if options.get("HttpTokens") != "required" or options.get("HttpPutResponseHopLimit") != 1:
                found.append(f"{name}: IMDSv1 allowed or a hop limit above 1 (HttpTokens required, limit 1)")
    parameters = template.get("Parameters") or {}
    for parameter in NO_ECHO_PARAMETERS:
        if parameter in parameters and parameters[parameter].get("NoEcho") is not True:
            found.append(f"{parameter}: a secret parameter without NoEcho")
    return found


def _instance_violations(name: str, properties: dict[str, Any], templates: dict[str, Any]) -> list[str]:
    found = []
    if "IamInstanceProfile" in properties:
        found.append(f"{name}: an instance profile (the instance holds no credentials)")
    if "KeyName" in properties:
        found.append(f"{name}: a key pair")
    if properties.get("InstanceInitiatedShutdownBehavior") != "terminate":
        found.append(f"{name}: InstanceInitiatedShutdownBehavior is not terminate")
    launch = properties.get("LaunchTemplate") or {}
    if not launch or not templates:
        found.append(f"{name}: no launch template enforcing IMDSv2")
    return found


def check(path: Path, function_name: str) -> None:
    """Raise JobTemplateError naming every violation of the template at ``path``."""
    from pijobs.local.cfn import load_template  # lazy: PyYAML comes with the [local] extra or cfn-lint

    problems = violations(load_template(path))
    if problems:
        raise JobTemplateError(
            f"function {function_name}'s template breaks the job template's invariants: "
            + "; ".join(problems)
        )
