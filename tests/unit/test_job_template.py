"""The platform renders each function's job template with its invariants; a function's own template keeps
them or `pijobs package` refuses it, naming the resource."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pijobs import deploy, job_template, plugins
from pijobs.shared.functions import installed_functions


@pytest.mark.parametrize("name", sorted(installed_functions()))
def test_every_installed_function_s_template_keeps_the_invariants(name: str) -> None:
    assert job_template.violations(job_template.load(installed_functions()[name])) == []


def test_a_rendered_template_differs_only_where_its_function_declares() -> None:
    functions = installed_functions()
    pi, sql = job_template.render(functions["pi"]), job_template.render(functions["sql"])

    assert "Digits" in pi["Parameters"] and "Digits" not in sql["Parameters"]
    instance = lambda t: t["Resources"]["WorkerInstance"]["Properties"]  # noqa: E731
    volume = lambda t: instance(t)["BlockDeviceMappings"][0]["Ebs"]  # noqa: E731
    assert {"Key": "Digits", "Value": {"Ref": "Digits"}} in instance(pi)["Tags"]
    assert (volume(pi)["VolumeSize"], volume(sql)["VolumeSize"]) == (16, 64)
    assert pi["Parameters"]["InstanceType"]["AllowedValues"] == list(functions["pi"].instance_types)
    for t in (pi, sql):  # everything else is the platform's
        del t["Parameters"]["InstanceType"], t["Description"], t["Metadata"]
        t["Parameters"].pop("Digits", None)
        instance(t)["Tags"] = [tag for tag in instance(t)["Tags"] if tag["Key"] != "Digits"]
        del volume(t)["VolumeSize"]
    assert pi == sql


def test_the_uploaded_body_is_the_rendering_and_reads_as_yaml_too() -> None:
    pi = installed_functions()["pi"]
    body = job_template.body(pi)

    assert body == job_template.body(pi)  # the same bytes each time: a version's content does not drift
    assert json.loads(body) == yaml.safe_load(body) == job_template.render(pi)


def _pi() -> dict[str, Any]:
    return job_template.render(installed_functions()["pi"])


def _broken(change: Any) -> list[str]:
    template = copy.deepcopy(_pi())
    change(template)
    return job_template.violations(template)


def test_each_broken_invariant_is_named_with_its_resource() -> None:
    instance = lambda t: t["Resources"]["WorkerInstance"]["Properties"]  # noqa: E731
    options = lambda t: t["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"][  # noqa: E731
        "MetadataOptions"
    ]

    assert _broken(lambda t: instance(t).update(IamInstanceProfile="p")) == [
        "WorkerInstance: an instance profile (the instance holds no credentials)"
    ]
    assert _broken(lambda t: instance(t).update(KeyName="k")) == ["WorkerInstance: a key pair"]
    assert _broken(lambda t: instance(t).update(InstanceInitiatedShutdownBehavior="stop")) == [
        "WorkerInstance: InstanceInitiatedShutdownBehavior is not terminate"
    ]
    assert _broken(lambda t: options(t).update(HttpTokens="optional")) == [
        "WorkerLaunchTemplate: IMDSv1 allowed or a hop limit above 1 (HttpTokens required, limit 1)"
    ]
    assert _broken(lambda t: options(t).update(HttpPutResponseHopLimit=2))[0].startswith(
        "WorkerLaunchTemplate"
    )
    assert _broken(
        lambda t: t["Resources"]["WorkerSecurityGroup"]["Properties"].update(
            SecurityGroupIngress=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "0.0.0.0/0"}]
        )
    ) == ["WorkerSecurityGroup: an inbound rule (a job's instance has no way in)"]
    assert _broken(lambda t: t["Resources"].update(Role={"Type": "AWS::IAM::Role", "Properties": {}})) == [
        "Role: a AWS::IAM::Role gives the instance credentials"
    ]
    assert _broken(lambda t: t["Parameters"]["WorkerToken"].pop("NoEcho")) == [
        "WorkerToken: a secret parameter without NoEcho"
    ]


def _own_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Any:
    """pi, as if it shipped ``text`` as a template of its own."""
    pi = installed_functions()["pi"]
    own = tmp_path / "template.yaml"
    own.write_text(text)
    monkeypatch.setattr(type(pi), "template_path", lambda self: own)
    return pi


def test_an_own_template_that_keeps_the_invariants_is_shipped_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = job_template.body(installed_functions()["pi"]).decode()
    pi = _own_template(tmp_path, monkeypatch, rendered.replace('"VolumeSize": 16', '"VolumeSize": 32'))

    job_template.check(pi)
    assert b'"VolumeSize": 32' in job_template.body(pi)


def test_package_refuses_an_own_template_that_breaks_one_before_uploading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = job_template.render(installed_functions()["pi"])
    rendered["Resources"]["WorkerInstance"]["Properties"]["IamInstanceProfile"] = "admin"
    _own_template(tmp_path, monkeypatch, yaml.safe_dump(rendered))

    class NoS3:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"nothing is uploaded: {name}")

    with pytest.raises(deploy.PackagingError, match="WorkerInstance: an instance profile"):
        deploy.package(NoS3(), bucket="b", functions=["pi"], with_deps=False)


def test_functions_check_names_an_own_template_s_broken_invariant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = job_template.render(installed_functions()["pi"])
    rendered["Resources"]["WorkerInstance"]["Properties"]["KeyName"] = "ops"
    pi = _own_template(tmp_path, monkeypatch, yaml.safe_dump(rendered))

    assert plugins.template_problems(installed_functions()["sql"]) == []  # rendered: nothing to say
    assert plugins.template_problems(pi) == ["its template breaks an invariant: WorkerInstance: a key pair"]
