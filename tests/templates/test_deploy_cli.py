"""`pijobs package` and `pijobs deploy` against a moto server reached through AWS_ENDPOINT_URL."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pijobs import deploy, job_template
from pijobs.cli import build_parser
from pijobs.cli import main as cli_main
from pijobs.cli.deploy import parse_params
from pijobs.cli.render import Output
from pijobs.errors import UsageError
from pijobs.shared.functions import (
    TEMPLATE_FILE,
    WORKER_FILE,
    artifact_key,
    installed_functions,
    job_stack_parameters,
)

BUCKET = "pijobs-artifacts-test"


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        reset(endpoint)  # the server shares moto's in-process state: start from nothing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield endpoint
    finally:
        reset(endpoint)
        server.stop()


def reset(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def run(argv: list[str]) -> int:
    """The command as the command line runs it, with its failures raised rather than printed."""
    args = build_parser().parse_args(argv)
    return int(args.run(args, Output()))


def zip_names(body: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return set(archive.namelist())


def zip_member(body: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return archive.read(name)


def _imports_from_the_zip(body: bytes, *modules: str, tmp_path: Path) -> None:
    """The zip's own pijobs is complete: with the zip first on sys.path (as on Lambda), the modules import
    from it, their third-party dependencies from this environment (``--no-deps`` left them out)."""
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        archive.extractall(folder)
    code = (  # an editable install's import hook would find what the zip lacks: it goes first
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if not getattr(f, '__module__', '').startswith('__editable__')]; "
        f"sys.path.insert(0, {str(folder)!r}); import importlib, pijobs; "
        f"[importlib.import_module(m) for m in {list(modules)!r}]; "
        f"assert pijobs.__file__.startswith({str(folder)!r}), pijobs.__file__"
    )
    subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, check=True, timeout=120)


def test_package_uploads_code_templates_and_manifest(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["package", "--bucket", BUCKET, "--no-deps", "--arch", "arm64"]) == 0
    printed = capsys.readouterr().out
    assert f"went to the AWS endpoint {moto_endpoint}, not to AWS" in printed and "Next:" not in printed

    s3 = boto3.client("s3")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=deploy.MANIFEST_KEY)["Body"].read())
    assert manifest["arch"] == "arm64"
    assert manifest["runtime"] == "python3.12"
    lambda_zip = s3.get_object(Bucket=BUCKET, Key=manifest["lambda_key"])["Body"].read()
    names = zip_names(lambda_zip)
    assert {
        "pijobs/api_handler/handler.py",
        "pijobs/dispatcher/handler.py",
        "pijobs/shared/__init__.py",
        "pijobs/functions.py",  # the plug-in API the packaged functions import
    } <= names
    assert "pijobs/cli.py" not in names and "pijobs/local/__init__.py" not in names
    _imports_from_the_zip(lambda_zip, "pijobs.api_handler.handler", "pijobs_wordcount", tmp_path=tmp_path)
    assert {
        f"pijobs/api_handler/static/console.{kind}" for kind in ("html", "css", "js")
    } <= names  # GET /console
    # the functions' definitions (for validation), not the worker runtime; their entry points for discovery
    assert {
        "pijobs/worker/__init__.py",
        "pijobs/worker/pi/function.py",
        "pijobs/worker/sql/function.py",
        "pijobs/worker/sql/query.py",
        "pijobs_wordcount/__init__.py",
    } <= names
    assert "pijobs/worker/job.py" not in names and not any("__pycache__" in n for n in names)
    registry = zip_member(lambda_zip, f"{deploy.REGISTRY_DIST_INFO}/entry_points.txt").decode()
    assert (
        "pi = pijobs.worker.pi.function:PiFunction" in registry
        and "word-count = pijobs_wordcount:WordCount" in registry
    )
    assert set(manifest["functions"]) == {"pi", "sql", "word-count"}
    for name, packaged in manifest["functions"].items():
        assert packaged["template_key"] == f"functions/{name}/{packaged['version']}/template.yaml"
        worker_zip = s3.get_object(Bucket=BUCKET, Key=packaged["worker_key"])["Body"].read()
        own = zip_member(worker_zip, f"{deploy.REGISTRY_DIST_INFO}/entry_points.txt").decode()
        assert {
            "pijobs/__init__.py",
            "pijobs/worker/__main__.py",
            "pijobs/worker/job.py",
            "pijobs/shared/__init__.py",
            "pijobs/functions.py",
        } <= zip_names(worker_zip)
        assert own.splitlines()[1:] == [f"{name} = {deploy.entry_point_of(installed_functions()[name])}"]
        template = s3.get_object(Bucket=BUCKET, Key=packaged["template_key"])["Body"].read()
        assert template == job_template.body(installed_functions()[name])
    wordcount = zip_names(
        s3.get_object(Bucket=BUCKET, Key=manifest["functions"]["word-count"]["worker_key"])["Body"].read()
    )
    assert "pijobs_wordcount/__init__.py" in wordcount  # a plug-in's package travels in its worker artifact
    assert not any(name.endswith("template.yaml") for name in wordcount)  # its template is the platform's


def test_a_packaged_version_is_never_changed_under_its_jobs(moto_endpoint: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    deploy.package(s3, bucket=BUCKET, with_deps=False, functions=["pi"])
    key = "functions/pi/1/template.yaml"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"other", Metadata={"sha256": "0" * 64})

    with pytest.raises(deploy.PackagingError, match="bump the function's version"):
        deploy.package(s3, bucket=BUCKET, with_deps=False, functions=["pi"])

    deploy.package(s3, bucket=BUCKET, with_deps=False, functions=["pi"], replace=True)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == job_template.body(
        installed_functions()["pi"]
    )


def test_package_refuses_a_function_that_is_not_installed(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["package", "--bucket", BUCKET, "--no-deps", "--function", "nope"]) == 1
    assert "enabled functions ['nope'] are not installed" in capsys.readouterr().err


def test_packaging_one_function_adds_it_without_switching_the_others_off(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["package", "--bucket", BUCKET, "--no-deps", "--function", "pi"]) == 0
    assert run(["package", "--bucket", BUCKET, "--no-deps", "--function", "word-count"]) == 0
    assert "The deployment offers: pi 1, word-count" in capsys.readouterr().out

    s3 = boto3.client("s3")
    manifest = deploy.read_manifest(s3, BUCKET)
    assert set(manifest.functions) == {"pi", "word-count"}  # pi stays offered
    assert manifest.stack_parameters()["EnabledFunctions"] == "pi,word-count"
    lambda_zip = s3.get_object(Bucket=BUCKET, Key=manifest.lambda_key)["Body"].read()
    assert {"pijobs/worker/pi/function.py", "pijobs_wordcount/__init__.py"} <= zip_names(lambda_zip)

    assert run(["package", "--bucket", BUCKET, "--no-deps", "--remove", "word-count"]) == 0
    assert set(deploy.read_manifest(s3, BUCKET).functions) == {"pi"}
    with pytest.raises(deploy.PackagingError, match=r"cannot remove \['sql'\]"):
        run(["package", "--bucket", BUCKET, "--no-deps", "--remove", "sql"])


def test_a_deployed_function_not_installed_here_is_refused_loudly(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["package", "--bucket", BUCKET, "--no-deps", "--function", "word-count"]) == 0
    installed = {k: v for k, v in installed_functions().items() if k != "word-count"}
    monkeypatch.setattr(deploy, "installed_functions", lambda: installed)

    with pytest.raises(deploy.PackagingError, match=r"offers word-count .* not installed here"):
        deploy.package(boto3.client("s3"), bucket=BUCKET, with_deps=False, functions=["pi"])


def test_packaging_twice_gives_the_same_keys(moto_endpoint: str) -> None:
    s3 = boto3.client("s3")

    first = deploy.package(s3, bucket=BUCKET, with_deps=False)
    second = deploy.package(s3, bucket=BUCKET, with_deps=False)

    assert first == second


def test_deploy_creates_then_updates_the_primary_stack(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["package", "--bucket", BUCKET, "--no-deps"])

    assert run(["deploy", "--bucket", BUCKET, "--param", "MaxActiveStacks=3", "--poll-seconds", "1"]) == 0

    printed = capsys.readouterr().out
    cfn = boto3.client("cloudformation")
    (stack,) = cfn.describe_stacks(StackName="pijobs")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert f"API: {outputs['ApiUrl']}" in printed
    assert f"Console: {outputs['ApiUrl']}/console" in printed
    assert "pijobs keys create NAME" in printed
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["MaxActiveStacks"] == "3"
    assert parameters["LambdaRuntime"] == "python3.12"
    dispatcher = boto3.client("lambda").get_function_configuration(
        FunctionName=outputs["DispatcherFunctionName"]
    )
    assert dispatcher["Handler"] == "pijobs.dispatcher.handler.lambda_handler"

    assert run(["deploy", "--param", "MaxActiveStacks=5", "--poll-seconds", "1"]) == 0

    assert "Stack pijobs: updated" in capsys.readouterr().out
    (stack,) = cfn.describe_stacks(StackName="pijobs")["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["MaxActiveStacks"] == "5"
    assert parameters["ArtifactsBucket"] == BUCKET


def test_deploy_without_a_bucket_explains_what_is_missing(moto_endpoint: str) -> None:
    with pytest.raises(ValueError, match="--bucket"):
        run(["deploy", "--poll-seconds", "1"])


def test_deploy_refuses_a_parameter_the_template_does_not_have(moto_endpoint: str) -> None:
    run(["package", "--bucket", BUCKET, "--no-deps"])

    with pytest.raises(ValueError, match=r"no parameters \['Bogus'\]; it takes: .*MaxActiveStacks"):
        run(["deploy", "--bucket", BUCKET, "--param", "Bogus=1", "--poll-seconds", "1"])
    assert boto3.client("cloudformation").list_stacks()["StackSummaries"] == []


def test_param_must_be_key_equals_value() -> None:
    with pytest.raises(UsageError, match="--param takes KEY=VALUE"):
        parse_params(["MaxActiveStacks"])


def test_pip_targets_the_lambda_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: calls.append(command))

    deploy.build_zip(
        ("pijobs.shared",),
        deploy.LAMBDA_REQUIREMENTS,
        platform=deploy.PLATFORMS["arm64"],
        python_version="3.13",
    )

    (command,) = calls
    assert command[command.index("--platform") + 1] == "manylinux2014_aarch64"
    assert command[command.index("--python-version") + 1] == "3.13"
    assert "--only-binary=:all:" in command
    assert command[-2:] == ["pydantic>=2.6", "structlog>=24.1"]


@pytest.mark.skipif(
    os.environ.get("PIJOBS_TEST_PIP") != "1",
    reason="downloads wheels from the package index; PIJOBS_TEST_PIP=1",
)
def test_lambda_zip_with_dependencies_imports_pydantic_core_for_the_platform(tmp_path: Path) -> None:
    body = deploy.build_zip(
        deploy.LAMBDA_PACKAGES,
        deploy.LAMBDA_REQUIREMENTS,
        platform=deploy.PLATFORMS["x86_64"],
        python_version="3.12",
    )

    names = zip_names(body)
    assert any(n.startswith("pydantic_core/_pydantic_core.cpython-312-x86_64-linux-gnu") for n in names)
    assert any(n.startswith("structlog/") for n in names)
    assert not any(n.startswith("boto3/") for n in names)


@pytest.mark.skipif(
    os.environ.get("PIJOBS_TEST_PIP") != "1",
    reason="downloads wheels from the package index; PIJOBS_TEST_PIP=1",
)
def test_package_then_deploy_then_the_dispatchers_config_launches_a_job_stack(moto_endpoint: str) -> None:
    """The real artifacts (with manylinux wheels) deployed with `pijobs deploy`; the dispatcher's environment
    as deployed creates a business-function stack from the uploaded template."""
    from pijobs.shared.settings import DispatcherSettings
    from pijobs.shared.stacks import StackLauncher

    assert run(["package", "--bucket", BUCKET]) == 0
    assert run(["deploy", "--bucket", BUCKET, "--poll-seconds", "1"]) == 0

    cfn = boto3.client("cloudformation")
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cfn.describe_stacks(StackName="pijobs")["Stacks"][0]["Outputs"]
    }
    env = boto3.client("lambda").get_function_configuration(FunctionName=outputs["DispatcherFunctionName"])[
        "Environment"
    ]["Variables"]
    settings = DispatcherSettings.from_env(env)
    launcher = StackLauncher(cfn, role_arn=settings.cfn_role_arn)
    job_id = "0123456789abcdef0123456789abcdef"
    name = f"pijob-{job_id}-1"
    pi = settings.functions().get("pi")
    worker = {"Bucket": settings.artifacts_bucket, "Key": artifact_key("pi", pi.version, WORKER_FILE)}
    assert boto3.client("s3").head_object(**worker)["ContentLength"]
    parameters = job_stack_parameters(
        pi,
        pi.parse_params({"digits": 1000}),
        job_id=job_id,
        deadline_seconds=600,
        artifact_url=boto3.client("s3").generate_presigned_url("get_object", Params=worker),
        token="T" * 43,
        fixed=settings.stack_parameters,
    )
    launcher.create(
        name,
        settings.template_url(artifact_key("pi", pi.version, TEMPLATE_FILE)),
        parameters,
        {"JobId": job_id, "Owner": "key", "CostCenter": "1"},
    )

    (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    instances = [
        i
        for r in boto3.client("ec2").describe_instances()["Reservations"]
        for i in r["Instances"]
        if {"Key": "JobId", "Value": job_id} in i.get("Tags", [])
    ]
    assert len(instances) == 1 and instances[0]["State"]["Name"] == "running"


@pytest.mark.skipif(
    os.environ.get("PIJOBS_TEST_PIP") != "1",
    reason="builds a wheel with setuptools from the package index; PIJOBS_TEST_PIP=1",
)
def test_the_wheel_ships_the_templates_and_the_pi_entry_point(tmp_path: Path) -> None:
    """What `pip install .` (not editable) gets: the primary template and pi's, and pi's registration."""
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(root)],
        check=True,
    )
    (wheel,) = tmp_path.glob("pijobs-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        registered = archive.read(entry_points).decode()
        shipped = archive.read("pijobs/templates/primary.yaml")
    assert "pijobs/job_template.py" in names  # the job templates are rendered, not shipped
    assert not any(name.endswith("/template.yaml") for name in names)
    assert shipped == (root / "infra" / "primary.yaml").read_bytes()
    assert "pi = pijobs.worker.pi.function:PiFunction" in registered


def test_deploy_names_the_stack_pijobs_ops_reads(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One stack name for the operator's commands: ``$PIJOBS_STACK_NAME`` is the one deploy creates too."""
    run(["package", "--bucket", BUCKET, "--no-deps"])
    monkeypatch.setenv("PIJOBS_STACK_NAME", "pijobs-staging")

    assert run(["deploy", "--bucket", BUCKET, "--poll-seconds", "1"]) == 0

    (stack,) = boto3.client("cloudformation").describe_stacks(StackName="pijobs-staging")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
