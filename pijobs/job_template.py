"""The one job template: rendered by the platform from what a function declares, and its invariants.

A business function declares only what differs (``instance_types``, ``root_volume_gib``, its deadline, its
``requirements`` and its own whitelisted ``stack_parameter_names``, which become String parameters recorded
on the instance's tags). Everything else is the platform's, the same for every function: no key pair, no
instance profile (no credentials on the instance), IMDSv2 only with a hop limit of 1 (through a launch
template), no inbound rule, terminated when it shuts down, a hard shutdown at the deadline, the worker
channel token and the presigned artifact URL as NoEcho parameters. ``render`` builds it from Python, so the
job id pattern, the deadline range and the instance types are the ones Python checks, by construction.

A function may still ship a template of its own (``template = "template.yaml"`` beside its module): it is
deployed as it is, but only while it keeps the invariants (``violations``), which ``pijobs package`` and
``pijobs functions check`` check before anything is uploaded, naming the resource (docs/functions.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pijobs.shared.channel import TOKEN_PATTERN
from pijobs.shared.errors import PijobsError
from pijobs.shared.functions import (
    DEADLINE_RANGE,
    PLATFORM_PARAMETERS,
    BusinessFunction,
    installed_functions,
)
from pijobs.shared.ids import ID_PATTERN

NO_ECHO_PARAMETERS = ("WorkerToken", "WorkerArtifactUrl")
CREDENTIAL_TYPES = frozenset({"AWS::IAM::InstanceProfile", "AWS::IAM::Role", "AWS::IAM::User"})
WORKER_PYTHON = "3.11"  # Amazon Linux 2023's python3.11 package: what the UserData runs, what pip targets
IMAGE_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
TAG_VALUE_MAX = 256  # EC2's limit on a tag value: a function's own parameters are recorded as tags
HTTP_URL = r'https?://[^\s"]+'
FIXED_PARAMETERS = ("ApiUrl", "SubnetId", "VpcId")  # the primary stack's, the same for every job
# The worker shim. Bash variables are written $name (never with braces) so that only the CloudFormation
# parameters (${Name}) are substituted.
USER_DATA = f"""#!/bin/bash
# pijobs worker shim: everything real happens in `python3 -m pijobs.worker`.
set -uo pipefail
deadline_seconds=${{DeadlineSeconds}}
# Hard stop at the deadline (plus a minute of grace), whatever happens below.
shutdown -h +$(( (deadline_seconds + 59) / 60 + 1 ))
# And power off (= terminate) as soon as this script ends, successfully or not.
trap 'shutdown -h now' EXIT
app=/opt/pijobs/app
dnf install -y -q python{WORKER_PYTHON} || exit 1
mkdir -p "$app"
curl -fsS --retry 5 -o /opt/pijobs/worker.zip "${{WorkerArtifactUrl}}" || exit 1
python{WORKER_PYTHON} -m zipfile -e /opt/pijobs/worker.zip "$app" || exit 1
export PYTHONPATH="$app"
export PIJOBS_API_URL="${{ApiUrl}}"
export PIJOBS_WORKER_TOKEN="${{WorkerToken}}"
export PIJOBS_INSTANCE_ID="$(cat /var/lib/cloud/data/instance-id)"
timeout --kill-after=30 "$deadline_seconds" python{WORKER_PYTHON} -m pijobs.worker --job-id "${{JobId}}"
echo "pijobs worker exited with status $?"
"""


class JobTemplateError(PijobsError):
    code = "job_template_invalid"


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _tag(key: str, value: Any) -> dict[str, Any]:
    return {"Key": key, "Value": value}


def render(function: BusinessFunction) -> dict[str, Any]:
    """The job template of ``function``: the platform's invariants around what the function declares."""
    own = list(function.stack_parameter_names)
    job_tags = [_tag("JobId", _ref("JobId"))]
    parameters: dict[str, Any] = {
        "JobId": {
            "Type": "String",
            "AllowedPattern": ID_PATTERN.removeprefix("^").removesuffix("$"),
            "ConstraintDescription": "a pijobs job id",
            "Description": "Job id; the stack is named pijob-<JobId>-<attempt>.",
        },
        **{
            name: {
                "Type": "String",
                "MaxLength": TAG_VALUE_MAX,
                "Description": f"Set per job by function {function.name}; recorded on the instance's tags.",
            }
            for name in own
        },
        "ApiUrl": {
            "Type": "String",
            "AllowedPattern": HTTP_URL,
            "ConstraintDescription": "the pijobs API's base URL",
            "Description": "The pijobs API whose worker channel the worker calls (<ApiUrl>/worker/jobs/...).",
        },
        "SubnetId": {
            "Type": "AWS::EC2::Subnet::Id",
            "Description": "Subnet for the instance; needs a route to the pijobs API and S3 over HTTPS.",
        },
        "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "VPC of SubnetId."},
        "WorkerArtifactUrl": {
            "Type": "String",
            "NoEcho": True,
            "AllowedPattern": HTTP_URL,
            "ConstraintDescription": "an http(s) URL",
            "Description": "A presigned GET, made at dispatch, of the function's worker artifact (the "
            "instance has no credentials to read the artifacts bucket with).",
        },
        "WorkerToken": {
            "Type": "String",
            "NoEcho": True,
            "AllowedPattern": TOKEN_PATTERN.pattern,
            "ConstraintDescription": "a worker channel token",
            "Description": "This attempt's worker channel token (the job record keeps only its hash); good "
            "for this job's attempt only, and only until that attempt ends.",
        },
        "InstanceType": {
            "Type": "String",
            "AllowedValues": list(function.instance_types),
            "Description": "Instance type, chosen by the dispatcher from the function's allow-list.",
        },
        "DeadlineSeconds": {
            "Type": "Number",
            "MinValue": DEADLINE_RANGE[0],
            "MaxValue": DEADLINE_RANGE[1],
            "Description": "Hard wall-clock limit; the instance powers off (and terminates) shortly after.",
        },
        "ImageId": {
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": IMAGE_PARAMETER,
            "Description": "Public SSM parameter of the Amazon Linux 2023 x86_64 image.",
        },
    }
    resources: dict[str, Any] = {
        "WorkerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": {"Fn::Sub": "pijobs job ${JobId}: no inbound, HTTPS out only"},
                "VpcId": _ref("VpcId"),
                "SecurityGroupEgress": [
                    {
                        "Description": "HTTPS to the pijobs API, S3 (presigned URLs), the OS package mirrors",
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": "0.0.0.0/0",
                    }
                ],
                "Tags": job_tags,
            },
        },
        # AWS::EC2::Instance has no MetadataOptions property: IMDSv2 is enforced through a launch template.
        "WorkerLaunchTemplate": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "MetadataOptions": {
                        "HttpEndpoint": "enabled",
                        "HttpTokens": "required",
                        "HttpPutResponseHopLimit": 1,
                        "InstanceMetadataTags": "disabled",
                    }
                },
                "TagSpecifications": [{"ResourceType": "launch-template", "Tags": job_tags}],
            },
        },
        "WorkerInstance": {
            "Type": "AWS::EC2::Instance",
            "Properties": {
                "LaunchTemplate": {
                    "LaunchTemplateId": _ref("WorkerLaunchTemplate"),
                    "Version": {"Fn::GetAtt": ["WorkerLaunchTemplate", "LatestVersionNumber"]},
                },
                "ImageId": _ref("ImageId"),
                "InstanceType": _ref("InstanceType"),
                "SubnetId": _ref("SubnetId"),
                "SecurityGroupIds": [{"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]}],
                "InstanceInitiatedShutdownBehavior": "terminate",
                "EbsOptimized": True,
                "BlockDeviceMappings": [
                    {
                        "DeviceName": "/dev/xvda",
                        "Ebs": {
                            "VolumeType": "gp3",
                            "VolumeSize": function.root_volume_gib,
                            "Encrypted": True,
                            "DeleteOnTermination": True,
                        },
                    }
                ],
                "Tags": [
                    _tag("Name", {"Fn::Sub": "pijob-${JobId}"}),
                    *job_tags,
                    *(_tag(name, _ref(name)) for name in own),
                    _tag("DeadlineSeconds", _ref("DeadlineSeconds")),
                ],
                "UserData": {"Fn::Base64": {"Fn::Sub": USER_DATA}},
            },
        },
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            f'pijobs business function "{function.name}" version {function.version}: one short-lived EC2 '
            "instance that runs `python3 -m pijobs.worker` for one job. Rendered by pijobs (the platform's "
            "job template); created by the dispatcher through the primary stack's service role"
        ),
        "Metadata": {
            "AWS::CloudFormation::Interface": {
                "ParameterGroups": [
                    {
                        "Label": {"default": "Job (set per job by the dispatcher)"},
                        "Parameters": [p for p in PLATFORM_PARAMETERS if p not in FIXED_PARAMETERS] + own,
                    },
                    {
                        "Label": {"default": "Fixed (from the primary stack)"},
                        "Parameters": list(FIXED_PARAMETERS),
                    },
                    {"Label": {"default": "Image"}, "Parameters": ["ImageId"]},
                ]
            }
        },
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": {
            "InstanceId": {"Description": "The job's instance.", "Value": _ref("WorkerInstance")},
            "SecurityGroupId": {
                "Description": "The job's security group (no inbound rules).",
                "Value": {"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]},
            },
        },
    }


def body(function: BusinessFunction) -> bytes:
    """The template as uploaded for the function's version: its own file's bytes, or the rendered one (JSON,
    which CloudFormation and cfn-lint read as they read YAML; the same bytes for the same function)."""
    path = function.template_path()
    if path is not None:
        return path.read_bytes()
    return (json.dumps(render(function), indent=1, ensure_ascii=False) + "\n").encode()


def load(function: BusinessFunction) -> dict[str, Any]:
    """The template as a dict: rendered, or the function's own file read (PyYAML: the [local] extra)."""
    path = function.template_path()
    if path is None:
        return render(function)
    from pijobs.local.cfn import load_template  # lazy: PyYAML comes with the [local] extra or cfn-lint

    return load_template(path)


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


def check(function: BusinessFunction) -> None:
    """Raise JobTemplateError naming every violation of ``function``'s template (its own, or the rendered
    one, which keeps them by construction and is checked all the same)."""
    problems = violations(load(function))
    if problems:
        raise JobTemplateError(
            f"function {function.name}'s template breaks the job template's invariants: "
            + "; ".join(problems)
        )


def write(folder: Path, functions: list[BusinessFunction] | None = None) -> list[Path]:
    """Write each installed function's template to ``folder/<name>.json`` (``.yaml`` for an own one), for
    cfn-lint and checkov to read the templates as they are uploaded; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for function in functions if functions is not None else list(installed_functions().values()):
        suffix = ".json" if function.template_path() is None else Path(function.template or "").suffix
        path = folder / f"{function.name}{suffix}"
        path.write_bytes(body(function))
        written.append(path)
    return written


if __name__ == "__main__":  # python -m pijobs.job_template FOLDER (tox's templates and checkov envs)
    for written in write(Path(sys.argv[1])):
        print(written)
