"""A function's job template keeps the platform's invariants, or `pijobs package` refuses it, naming the
resource: every shipped template passes; each way of breaking one is named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pijobs.shared.functions import installed_functions

from pijobs import deploy, job_template
from pijobs.local.cfn import load_template


@pytest.mark.parametrize("name", sorted(installed_functions()))
def test_every_installed_function_s_template_keeps_the_invariants(name: str) -> None:
    assert job_template.violations(load_template(installed_functions()[name].template_path())) == []


def _pi() -> dict[str, Any]:
    return load_template(installed_functions()["pi"].template_path())


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


def test_package_refuses_a_template_that_breaks_one_before_uploading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pi = installed_functions()["pi"]
    bad = tmp_path / "template.yaml"
    bad.write_text(
        pi.template_path()
        .read_text()
        .replace(
            "      SubnetId: !Ref SubnetId\n",
            "      SubnetId: !Ref SubnetId\n      IamInstanceProfile: admin\n",
        )
    )
    monkeypatch.setattr(type(pi), "template_path", lambda self: bad)

    class NoS3:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"nothing is uploaded: {name}")

    with pytest.raises(deploy.PackagingError, match="WorkerInstance: an instance profile"):
        deploy.package(NoS3(), bucket="b", functions=["pi"], with_deps=False)
