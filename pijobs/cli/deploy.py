"""``pijobs package`` and ``pijobs deploy``: the command line of :mod:`pijobs.deploy`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from pijobs import ops
from pijobs.cli.render import Output
from pijobs.deploy import PLATFORMS, PYTHON_VERSIONS, deploy, package, redeploy_api
from pijobs.errors import UsageError


def register(subparsers: Any, output: argparse.ArgumentParser) -> None:
    """Add ``pijobs package`` and ``pijobs deploy``."""
    pack = subparsers.add_parser(
        "package", parents=[output], help="build the Lambda zip and worker artifact, upload them"
    )
    pack.add_argument("--bucket", required=True, help="artifacts bucket (created if missing)")
    pack.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64", help="Lambda architecture")
    pack.add_argument(
        "--python",
        dest="python_version",
        choices=PYTHON_VERSIONS,
        default="3.12",
        help="Lambda Python version (LambdaRuntime pythonX.Y)",
    )
    pack.add_argument(
        "--no-deps",
        dest="with_deps",
        action="store_false",
        help="skip the third-party dependencies (tests only: the zips will not run)",
    )
    pack.add_argument(
        "--pip-arg",
        dest="pip_args",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for pip, e.g. --pip-arg=--find-links=wheels (repeatable)",
    )
    pack.add_argument(
        "--function",
        dest="functions",
        action="append",
        default=None,
        metavar="NAME",
        help="business function to package (repeatable; default: every installed one); the others the"
        " bucket already has stay offered",
    )
    pack.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="NAME",
        help="take a function out of what the deployment offers (repeatable; its artifacts stay)",
    )
    pack.add_argument(
        "--replace",
        action="store_true",
        help="overwrite a function version already packaged with other content",
    )
    pack.set_defaults(run=cmd_package)

    dep = subparsers.add_parser("deploy", parents=[output], help="create or update the primary stack on AWS")
    dep.add_argument(
        "--stack-name",
        help=f"primary stack name (default: ${ops.STACK_ENV} or {ops.DEFAULT_STACK}, as pijobs ops reads it)",
    )
    dep.add_argument("--bucket", help="artifacts bucket of pijobs package (default: the stack's current one)")
    dep.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter, e.g. --param MaxActiveStacks=20 (repeatable)",
    )
    dep.add_argument("--poll-seconds", type=int, default=10, help="stack status polling interval")
    dep.set_defaults(run=cmd_deploy)


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param takes KEY=VALUE, not {pair!r}")
        params[key.strip()] = value
    return params


def cmd_package(args: argparse.Namespace, out: Output) -> int:
    import boto3

    artifacts = package(
        boto3.client("s3"),
        bucket=args.bucket,
        arch=args.arch,
        python_version=args.python_version,
        with_deps=args.with_deps,
        pip_args=args.pip_args,
        functions=args.functions if args.functions or not args.remove else [],
        replace=args.replace,
        remove=args.remove,
    )
    if out.json_mode:
        out.json(asdict(artifacts))
        return 0
    print(f"Uploaded to s3://{artifacts.bucket}:")
    keys = [artifacts.lambda_key, artifacts.primary_template_key]
    for function in artifacts.functions.values():
        keys += [function.template_key, function.worker_key]
    for key in keys:
        print(f"  {key}")
    offered = ", ".join(f"{name} {f.version}" for name, f in sorted(artifacts.functions.items()))
    print(f"The deployment offers: {offered} (after pijobs deploy)")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:  # e.g. the moto server of `pijobs up`, which deployed its own stack and serves its own API
        print(f"These went to the AWS endpoint {endpoint}, not to AWS. The embedded stack (pijobs up)")
        print("needs no deploy; for AWS, unset AWS_ENDPOINT_URL and package again with your credentials.")
    else:
        print(f"Next: pijobs deploy --stack-name pijobs --bucket {artifacts.bucket}")
    return 0


def cmd_deploy(args: argparse.Namespace, out: Output) -> int:
    import boto3

    cfn = boto3.client("cloudformation")
    result = deploy(
        cfn,
        boto3.client("s3"),
        boto3.client("ec2"),
        stack_name=ops.stack_name(args.stack_name),
        bucket=args.bucket,
        params=parse_params(args.params),
        poll_seconds=args.poll_seconds,
    )
    if result.action == "updated":
        redeploy_api(boto3.client("apigateway"), result.outputs)
    outputs = result.outputs
    if out.json_mode:
        out.json(asdict(result))
        return 0
    print(f"Stack {result.stack_name}: {result.action}")
    print(f"API: {outputs.get('ApiUrl', '?')}")
    print(f"Console: {outputs.get('ApiUrl', '?')}/console")
    plan = outputs.get("UsagePlanId")
    plan_arg = f" --usage-plan-id {plan}" if plan else ""
    print(f"Create an API key: pijobs keys create NAME{plan_arg}")
    print(f"Then: curl -H 'x-api-key: <key>' -d '{{\"digits\": 1000}}' {outputs.get('ApiUrl', '')}/jobs")
    return 0
