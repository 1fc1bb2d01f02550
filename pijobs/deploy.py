"""Packaging and deployment of the pijobs CloudFormation stacks (``infra/``), on AWS and into moto.

Public API
----------
``deploy_primary_local(cfn, s3, ec2, *, stack_name="pijobs", params=None, artifacts_bucket=None)``
``-> dict[str, str]``
    For the embedded stack (moto): upload placeholder Lambda zips, every installed business function's
    template (with a placeholder worker artifact) and the primary template to an artifacts bucket (created if
    missing; default ``<stack_name>-artifacts``), create the primary stack from ``infra/primary.yaml`` in the
    default VPC's first subnet with every installed function enabled, wait, and return its outputs
    (``OutputKey -> OutputValue``). ``params`` override template parameters (``{"MaxActiveStacks": "4"}``).
    An existing stack of that name is reused as it is. moto skips API Gateway Stage/UsagePlan/ApiKey, alarms,
    bucket policy, request validator and gateway responses, so ``UsagePlanId`` is absent from the outputs.

``package(s3, *, bucket, arch="x86_64", python_version="3.12", with_deps=True, functions=None, ...)``
``-> Artifacts``
    Build the Lambda zip (``shared api_handler dispatcher``, every packaged function's package, pydantic and
    structlog for the Lambda platform) and, per business function, its worker artifact (``shared worker``,
    the function's package, pydantic, structlog and the function's requirements for Amazon Linux 2023's
    python3.11, x86_64; no boto3: the worker makes no AWS call). Upload the Lambda zip and the primary
    template under content-addressed keys, each function's template and worker under
    ``functions/<name>/<version>/`` (a version already there with other content is refused unless
    ``replace``), and write ``pijobs/manifest.json`` in the bucket.

``deploy(cfn, s3, ec2, *, stack_name="pijobs", bucket=None, params=None, poll_seconds=10) -> Deployment``
    Create or update the primary stack from the packaged artifacts (the manifest gives the parameters
    ``pijobs package`` decided; ``params`` win), wait until it is complete, return its outputs.

The command line's ``pijobs package`` and ``pijobs deploy`` are ``pijobs.cli.deploy``.

Clients are plain boto3 clients, so ``AWS_ENDPOINT_URL`` points all of this at a moto server.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pijobs import job_template
from pijobs.errors import OperationError
from pijobs.shared.functions import (
    ENTRY_POINT_GROUP,
    TEMPLATE_FILE,
    WORKER_FILE,
    BusinessFunction,
    artifact_key,
    entry_point_of,
    installed_functions,
    load_registry,
)

ROOT = Path(__file__).resolve().parents[1]
PRIMARY_TEMPLATE = "primary.yaml"
TEMPLATE_PREFIX = "templates/"
CAPABILITIES = ["CAPABILITY_IAM"]
MANIFEST_KEY = "pijobs/manifest.json"
# pijobs.functions: the plug-in API the packaged functions import (a module, copied beside its package's
# __init__.py alone).
LAMBDA_PACKAGES = ("pijobs.shared", "pijobs.functions", "pijobs.api_handler", "pijobs.dispatcher")
LAMBDA_REQUIREMENTS = ("pydantic>=2.6", "structlog>=24.1")  # boto3 comes with the Lambda runtime
# the generic worker runtime; each function adds its own package
WORKER_PACKAGES = ("pijobs.shared", "pijobs.functions", "pijobs.worker")
# each function adds its own; no boto3: the worker makes no AWS call (it holds no credentials)
WORKER_REQUIREMENTS = ("pydantic>=2.6", "structlog>=24.1")
# The entry points of the packaged functions, for importlib.metadata in a zip that pip did not install.
REGISTRY_DIST_INFO = "pijobs_functions-0.dist-info"
WORKER_PYTHON = job_template.WORKER_PYTHON  # what the job template's UserData runs
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
PYTHON_VERSIONS = ("3.12", "3.13")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_PLACEHOLDER_HANDLER = "def lambda_handler(event, context):\n    raise RuntimeError('placeholder code')\n"


# ---- templates ----------------------------------------------------------------------------------------
def template_path(name: str) -> Path:
    """The path of one of the CloudFormation templates (``infra/`` in a checkout, package data otherwise)."""
    for folder in (ROOT / "infra", Path(__file__).resolve().parent / "templates"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"CloudFormation template {name} not found")


def template_url(s3: Any, bucket: str, key: str) -> str:
    """The https URL CloudFormation reads a template from (virtual-hosted style, regional endpoint)."""
    region = s3.meta.region_name or "us-east-1"
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


# ---- S3 -----------------------------------------------------------------------------------------------
def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists and is ours."""
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except Exception as exc:
        if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    region = s3.meta.region_name or "us-east-1"
    request: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**request)


def placeholder_zip(module: str = "placeholder") -> bytes:
    """A tiny valid zip: moto's Lambda needs code to exist; locally the handlers run in-process instead."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}.py", _PLACEHOLDER_HANDLER)
    return buffer.getvalue()


class PackagingError(OperationError):
    """What `pijobs package` refuses to do, said plainly."""


def put_function_artifact(s3: Any, bucket: str, key: str, body: bytes, *, replace: bool = False) -> None:
    """Upload one file of a function version; the same version with other content is refused.

    A queued job keeps the version it was submitted with: changing a version's template or worker under it
    would switch that job to code it was not submitted to. A new template or worker is a new version.
    """
    digest = hashlib.sha256(body).hexdigest()
    if not replace:
        try:
            existing = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")
        except Exception as exc:
            if _error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
                raise
            existing = None
        if existing is not None and existing != digest:
            raise PackagingError(
                f"s3://{bucket}/{key} holds other content for this version: bump the function's version "
                "(or pass --replace, which changes the version under jobs already queued for it)"
            )
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": digest})


def upload_function_templates(
    s3: Any, bucket: str, functions: Iterable[BusinessFunction], *, replace: bool = False
) -> dict[str, str]:
    """Upload each function's job template (rendered by the platform, or its own) under its versioned key;
    returns ``{name: key}``."""
    keys = {}
    for function in functions:
        key = artifact_key(function.name, function.version, TEMPLATE_FILE)
        put_function_artifact(s3, bucket, key, job_template.body(function), replace=replace)
        keys[function.name] = key
    return keys


# ---- CloudFormation -------------------------------------------------------------------------------------
def stack_outputs(cfn: Any, stack_name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", []) if "OutputValue" in o}


def find_stack(cfn: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:
        if _error_code(exc) == "ValidationError":
            return None
        raise
    return stacks[0] if stacks else None


def as_parameters(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": key, "ParameterValue": str(value)} for key, value in values.items()]


def default_network(ec2: Any) -> tuple[str, str]:
    """(VpcId, SubnetId) of the default VPC and its first default-for-AZ subnet."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise RuntimeError("no default VPC: pass VpcId and SubnetId parameters")
    vpc_id = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    if not subnets:
        raise RuntimeError(f"default VPC {vpc_id} has no subnet: pass SubnetId")
    subnets.sort(key=lambda s: (not s.get("DefaultForAz", False), s.get("AvailabilityZone", "")))
    return str(vpc_id), str(subnets[0]["SubnetId"])


def deploy_primary_local(
    cfn: Any,
    s3: Any,
    ec2: Any,
    *,
    stack_name: str = "pijobs",
    params: Mapping[str, str] | None = None,
    artifacts_bucket: str | None = None,
) -> dict[str, str]:
    """Deploy ``infra/primary.yaml`` into moto with placeholder code; return the stack outputs."""
    # moto warns once per resource type its CloudFormation skips (Stage, UsagePlan, alarms...): expected here.
    warnings.filterwarnings("ignore", message="Tried to parse AWS::", category=UserWarning)
    if find_stack(cfn, stack_name) is not None:
        return stack_outputs(cfn, stack_name)
    given = dict(params or {})
    bucket = artifacts_bucket or given.get("ArtifactsBucket") or f"{stack_name}-artifacts"
    ensure_bucket(s3, bucket)
    lambda_key = "lambda/placeholder.zip"
    s3.put_object(Bucket=bucket, Key=lambda_key, Body=placeholder_zip())
    functions = list(installed_functions().values())
    upload_function_templates(s3, bucket, functions, replace=True)  # the local stack is rebuilt each time
    for function in functions:  # the local runner runs the installed worker; the zip only has to exist
        key = artifact_key(function.name, function.version, WORKER_FILE)
        s3.put_object(Bucket=bucket, Key=key, Body=placeholder_zip("worker_placeholder"))
    primary_key = f"{TEMPLATE_PREFIX}{PRIMARY_TEMPLATE}"
    s3.put_object(Bucket=bucket, Key=primary_key, Body=template_path(PRIMARY_TEMPLATE).read_bytes())
    defaults: dict[str, str] = {
        "ArtifactsBucket": bucket,
        "LambdaKey": lambda_key,
        "EnabledFunctions": "*",
    }
    if "VpcId" not in given or "SubnetId" not in given:
        defaults["VpcId"], defaults["SubnetId"] = default_network(ec2)
    cfn.create_stack(
        StackName=stack_name,
        TemplateURL=template_url(s3, bucket, primary_key),
        Parameters=as_parameters({**defaults, **given}),
        Capabilities=CAPABILITIES,
        Tags=[{"Key": "Application", "Value": "pijobs"}],
    )
    cfn.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    return stack_outputs(cfn, stack_name)


# ---- packaging ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionArtifacts:
    """One business function as packaged: its version and the keys of its template and worker."""

    version: str
    template_key: str
    worker_key: str


@dataclass(frozen=True)
class Artifacts:
    """What ``pijobs package`` uploaded: the keys in ``bucket`` and what the Lambda zip was built for."""

    bucket: str
    lambda_key: str
    primary_template_key: str
    functions: dict[str, FunctionArtifacts] = field(default_factory=dict)
    arch: str = "x86_64"
    runtime: str = "python3.12"
    with_deps: bool = True

    def stack_parameters(self) -> dict[str, str]:
        return {
            "ArtifactsBucket": self.bucket,
            "LambdaKey": self.lambda_key,
            "EnabledFunctions": ",".join(sorted(self.functions)),
            "LambdaArchitecture": self.arch,
            "LambdaRuntime": self.runtime,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifacts:
        functions = {name: FunctionArtifacts(**value) for name, value in data.pop("functions", {}).items()}
        return cls(**data, functions=functions)


def package_source(package: str) -> Path:
    """Where an importable top-level package lives (a checkout, site-packages or an editable install)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not (Path(locations[0]) / "__init__.py").is_file():
        raise FileNotFoundError(f"package {package} is not importable here")
    return Path(locations[0])


def _module_file(name: str) -> Path | None:
    """The file of a module that is not a package (``pijobs.functions``), else None."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is not None or not spec.origin:
        return None
    return Path(spec.origin)


def copy_packages(packages: Iterable[str], target: Path) -> None:
    """Copy packages (sources and package data, no caches) into ``target``. A dotted name copies that
    subpackage (or module) with its parents' ``__init__.py`` only; one inside a package copied whole is
    skipped."""
    wanted = list(dict.fromkeys(packages))
    for package in wanted:
        parts = package.split(".")
        if any(".".join(parts[:n]) in wanted for n in range(1, len(parts))):
            continue
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            folder = target.joinpath(*parts[:n])
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(package_source(parent) / "__init__.py", folder / "__init__.py")
        module = _module_file(package)
        if module is not None:
            shutil.copyfile(module, target.joinpath(*parts[:-1], module.name))
            continue
        shutil.copytree(
            package_source(package),
            target.joinpath(*parts),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )


def write_registry(functions: Iterable[BusinessFunction], target: Path) -> None:
    """A minimal dist-info declaring the functions' entry points, so the zip finds them like pip would."""
    folder = target / REGISTRY_DIST_INFO
    folder.mkdir()
    (folder / "METADATA").write_text("Metadata-Version: 2.1\nName: pijobs-functions\nVersion: 0\n")
    lines = [f"{function.name} = {entry_point_of(function)}" for function in functions]
    (folder / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")


def function_package(function: BusinessFunction) -> str:
    """The package holding a function's module and template (``pijobs.worker.pi``, ``pijobs_wordcount``)."""
    module = sys.modules[type(function).__module__]
    return module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]


def pip_install(
    requirements: Sequence[str],
    target: Path,
    *,
    platform: str,
    python_version: str,
    extra_args: Sequence[str] = (),
) -> None:
    """Install binary wheels for another platform/interpreter into ``target`` (what the zip will import)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--no-warn-conflicts",
        "--target",
        str(target),
        "--platform",
        platform,
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--upgrade",
        *extra_args,
        *requirements,
    ]
    subprocess.run(command, check=True)


def zip_tree(folder: Path) -> bytes:
    """A deterministic zip of ``folder`` (sorted entries, fixed timestamps): same content, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=_ZIP_DATE)
            info.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def build_zip(
    packages: Sequence[str],
    requirements: Sequence[str],
    *,
    platform: str,
    python_version: str,
    with_deps: bool = True,
    pip_args: Sequence[str] = (),
    functions: Sequence[BusinessFunction] = (),
) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pijobs-build-") as folder:
        target = Path(folder)
        if with_deps and requirements:
            pip_install(
                requirements, target, platform=platform, python_version=python_version, extra_args=pip_args
            )
        copy_packages([*packages, *(function_package(f) for f in functions)], target)
        write_registry(functions, target)
        return zip_tree(target)


def content_key(prefix: str, stem: str, body: bytes, suffix: str) -> str:
    return f"{prefix}{stem}-{hashlib.sha256(body).hexdigest()[:16]}{suffix}"


def package(
    s3: Any,
    *,
    bucket: str,
    arch: str = "x86_64",
    python_version: str = "3.12",
    with_deps: bool = True,
    pip_args: Sequence[str] = (),
    functions: Sequence[str] | None = None,
    replace: bool = False,
    remove: Sequence[str] = (),
) -> Artifacts:
    """Build and upload everything the primary stack needs; returns where it went (also in the manifest).

    ``functions``: the installed business functions to build (default: every installed one). The functions
    the bucket's manifest already lists stay in it, so the next ``deploy`` keeps offering them: packaging one
    function adds or updates that one. ``remove`` takes functions out of the manifest (their artifacts stay,
    for jobs already queued for them). The Lambda zip carries every function the manifest lists, so each
    must be installed here at the version the manifest has.
    """
    if arch not in PLATFORMS:
        raise ValueError(f"arch must be one of {sorted(PLATFORMS)}")
    if python_version not in PYTHON_VERSIONS:
        raise ValueError(f"python_version must be one of {PYTHON_VERSIONS}")
    chosen = list(load_registry(functions)) if functions is None or functions else []
    for function in chosen:  # before anything is built or uploaded: a job template keeps its invariants
        try:
            job_template.check(function)
        except job_template.JobTemplateError as exc:
            raise PackagingError(exc.message) from exc
    kept = _kept_functions(s3, bucket, chosen, remove)
    installed = installed_functions()
    offered = sorted([*chosen, *(installed[name] for name in kept)], key=lambda f: f.name)
    if not offered:
        raise PackagingError("no business function to offer: install one (pijobs brings pi) and package it")
    lambda_zip = build_zip(
        LAMBDA_PACKAGES,
        LAMBDA_REQUIREMENTS,
        platform=PLATFORMS[arch],
        python_version=python_version,
        with_deps=with_deps,
        pip_args=pip_args,
        functions=offered,
    )
    primary = template_path(PRIMARY_TEMPLATE).read_bytes()
    uploads = {
        content_key("lambda/", f"pijobs-lambda-{arch}-py{python_version}", lambda_zip, ".zip"): lambda_zip,
        content_key(TEMPLATE_PREFIX, "primary", primary, ".yaml"): primary,
    }
    ensure_bucket(s3, bucket)
    packaged: dict[str, FunctionArtifacts] = dict(kept)
    for function in chosen:
        worker_zip = build_zip(
            WORKER_PACKAGES,
            (*WORKER_REQUIREMENTS, *function.requirements),
            platform=PLATFORMS["x86_64"],
            python_version=WORKER_PYTHON,
            with_deps=with_deps,
            pip_args=pip_args,
            functions=[function],
        )
        worker_key = artifact_key(function.name, function.version, WORKER_FILE)
        put_function_artifact(s3, bucket, worker_key, worker_zip, replace=replace)
        template_key = upload_function_templates(s3, bucket, [function], replace=replace)[function.name]
        packaged[function.name] = FunctionArtifacts(function.version, template_key, worker_key)
    for key, body in uploads.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    lambda_key, primary_key = uploads
    artifacts = Artifacts(
        bucket=bucket,
        lambda_key=lambda_key,
        primary_template_key=primary_key,
        functions=packaged,
        arch=arch,
        runtime=f"python{python_version}",
        with_deps=with_deps,
    )
    s3.put_object(
        Bucket=bucket,
        Key=MANIFEST_KEY,
        Body=json.dumps(asdict(artifacts), indent=2).encode(),
        ContentType="application/json",
    )
    return artifacts


def _kept_functions(
    s3: Any, bucket: str, chosen: Sequence[BusinessFunction], remove: Sequence[str]
) -> dict[str, FunctionArtifacts]:
    """The functions of the bucket's manifest that stay as they are (not rebuilt, not removed), each
    installed here at its packaged version (the Lambda zip carries its request model)."""
    try:
        previous = read_manifest(s3, bucket).functions
    except ValueError:  # no manifest yet: a first package
        previous = {}
    building = {f.name for f in chosen}
    both = sorted(set(remove) & building)
    if both:
        raise PackagingError(f"{both}: a function is packaged (--function) or removed (--remove), not both")
    stray = sorted(set(remove) - set(previous))
    if stray:
        raise PackagingError(f"cannot remove {stray}: s3://{bucket} offers {sorted(previous) or 'none'}")
    kept = {name: f for name, f in previous.items() if name not in building and name not in remove}
    installed = installed_functions()
    for name, artifacts in sorted(kept.items()):
        here = installed.get(name)
        if here is None or here.version != artifacts.version:
            found = "not installed" if here is None else f"installed at version {here.version}"
            raise PackagingError(
                f"the deployment offers {name} {artifacts.version}, which is {found} here: install it, "
                f"package it too (--function {name}), or take it out (--remove {name})"
            )
    return kept


def read_manifest(s3: Any, bucket: str) -> Artifacts:
    try:
        body = s3.get_object(Bucket=bucket, Key=MANIFEST_KEY)["Body"].read()
    except Exception as exc:
        if _error_code(exc) in {"NoSuchKey", "NoSuchBucket", "404"}:
            raise ValueError(
                f"s3://{bucket} has no pijobs manifest: run pijobs package --bucket {bucket} first"
            ) from exc
        raise
    return Artifacts.from_json(json.loads(body))


# ---- deploying ------------------------------------------------------------------------------------------
@dataclass
class Deployment:
    stack_name: str
    action: str  # "created", "updated" or "unchanged"
    outputs: dict[str, str] = field(default_factory=dict)


def template_parameter_names(cfn: Any, url: str) -> set[str]:
    summary = cfn.get_template_summary(TemplateURL=url)
    return {p["ParameterKey"] for p in summary.get("Parameters", [])}


def deploy(
    cfn: Any,
    s3: Any,
    ec2: Any,
    *,
    stack_name: str = "pijobs",
    bucket: str | None = None,
    params: Mapping[str, str] | None = None,
    poll_seconds: int = 10,
) -> Deployment:
    """Create or update the primary stack from what ``package`` uploaded; wait; return the outputs."""
    given = dict(params or {})
    existing = find_stack(cfn, stack_name)
    bucket = bucket or given.get("ArtifactsBucket") or _previous(existing, "ArtifactsBucket")
    if not bucket:
        raise ValueError("no artifacts bucket: pass --bucket (the one given to pijobs package)")
    artifacts = read_manifest(s3, bucket)
    values = {**artifacts.stack_parameters(), **given}
    if existing is None and ("VpcId" not in values or "SubnetId" not in values):
        vpc_id, subnet_id = default_network(ec2)
        values.setdefault("VpcId", vpc_id)
        values.setdefault("SubnetId", subnet_id)
    url = template_url(s3, bucket, artifacts.primary_template_key)
    names = template_parameter_names(cfn, url)
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(
            f"the primary template has no parameters {unknown}; it takes: {', '.join(sorted(names))}"
        )
    waiter_config = {"Delay": max(1, poll_seconds), "MaxAttempts": max(60, 3600 // max(1, poll_seconds))}
    if existing is None or existing["StackStatus"] == "REVIEW_IN_PROGRESS":
        cfn.create_stack(
            StackName=stack_name,
            TemplateURL=url,
            Parameters=as_parameters(values),
            Capabilities=CAPABILITIES,
            Tags=[{"Key": "Application", "Value": "pijobs"}],
        )
        cfn.get_waiter("stack_create_complete").wait(StackName=stack_name, WaiterConfig=waiter_config)
        return Deployment(stack_name, "created", stack_outputs(cfn, stack_name))
    if existing["StackStatus"] in {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"}:
        raise RuntimeError(f"stack {stack_name} is {existing['StackStatus']}: delete it, then deploy again")
    # Parameters not given keep their current value (spelled out: moto rejects UsePreviousValue for
    # parameters that were left at their default); parameters the new template dropped are left out.
    current = {p["ParameterKey"]: p.get("ParameterValue", "") for p in existing.get("Parameters", [])}
    parameters = as_parameters({k: v for k, v in {**current, **values}.items() if k in names})
    try:
        cfn.update_stack(
            StackName=stack_name, TemplateURL=url, Parameters=parameters, Capabilities=CAPABILITIES
        )
    except Exception as exc:
        if _error_code(exc) == "ValidationError" and "No updates are to be performed" in str(exc):
            return Deployment(stack_name, "unchanged", stack_outputs(cfn, stack_name))
        raise
    cfn.get_waiter("stack_update_complete").wait(StackName=stack_name, WaiterConfig=waiter_config)
    return Deployment(stack_name, "updated", stack_outputs(cfn, stack_name))


def redeploy_api(apigw: Any, outputs: Mapping[str, str]) -> None:
    """CloudFormation does not redeploy a REST API whose methods changed: push the stage forward."""
    if "RestApiId" in outputs and "ApiStageName" in outputs:
        apigw.create_deployment(
            restApiId=outputs["RestApiId"], stageName=outputs["ApiStageName"], description="pijobs deploy"
        )


def _previous(stack: Mapping[str, Any] | None, key: str) -> str | None:
    for parameter in (stack or {}).get("Parameters", []):
        if parameter["ParameterKey"] == key:
            return str(parameter["ParameterValue"])
    return None


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
