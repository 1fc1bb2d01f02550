"""Business functions through the real handlers under moto: the operator's enable list, the catalog, and the
dispatcher keeping each job on its function's version."""

from __future__ import annotations

import base64

import pytest

import pijobs.dispatcher.handler
from pijobs import job_template
from pijobs.deploy import put_function_artifact
from pijobs.shared.functions import TEMPLATE_FILE, artifact_key, installed_functions
from tests.integration.conftest import Cloud

ONLY_PI = [{"PIJOBS_ENABLED_FUNCTIONS": "pi"}]


@pytest.mark.usefixtures("wordcount_plugin")
@pytest.mark.parametrize("cloud", ONLY_PI, indirect=True)
def test_a_disabled_function_is_a_404_in_the_catalog_and_a_422_on_submit(cloud: Cloud) -> None:
    assert "word-count" in installed_functions()  # installed, but not enabled

    listed = cloud.api("GET", "/functions")
    one = cloud.api("GET", "/functions/word-count")
    submitted = cloud.api("POST", "/jobs", {"function": "word-count", "params": {"text": "a"}})

    assert listed[0] == 200 and [f["name"] for f in listed[1]["functions"]] == ["pi"]
    assert one[0] == 404 and one[1]["error"]["code"] == "not_found"
    assert submitted[0] == 422
    assert submitted[1]["error"]["details"] == [{"field": "function", "problem": "must be one of: pi"}]


@pytest.mark.parametrize("cloud", [{"PIJOBS_FUNCTION_LIMITS": '{"pi": {"max_digits": 500}}'}], indirect=True)
def test_the_operator_s_limits_are_public_and_enforced(cloud: Cloud) -> None:
    (pi,) = [f for f in cloud.api("GET", "/functions")[1]["functions"] if f["name"] == "pi"]
    too_many = cloud.api("POST", "/jobs", {"function": "pi", "params": {"digits": 501}})
    shorthand = cloud.api("POST", "/jobs", {"digits": 501})
    far_too_many = cloud.api("POST", "/jobs", {"digits": 200_000_000})  # beyond the engine's own bound too
    document = cloud.api("GET", "/openapi.json")[1]["components"]["schemas"]

    assert pi["limits"] == {"max_digits": 500}
    # One bound, stated the same everywhere: the catalog (the console's form reads it), the OpenAPI
    # document, and the refusals, whatever the number asked for.
    assert pi["parameters"]["properties"]["digits"]["maximum"] == 500
    assert document["pi.PiParams"]["properties"]["digits"]["maximum"] == 500
    assert far_too_many[1]["error"]["details"] == [
        {"field": "digits", "problem": "must be between 1 and 500"}
    ]
    assert too_many[0] == 422
    assert too_many[1]["error"]["details"] == [
        {"field": "params.digits", "problem": "must be between 1 and 500"}
    ]
    assert shorthand[1]["error"]["details"] == [{"field": "digits", "problem": "must be between 1 and 500"}]


def test_a_job_is_provisioned_from_the_version_it_was_submitted_with(cloud: Cloud) -> None:
    pi = installed_functions()["pi"]
    job_id = cloud.submit(digits=40)
    old = job_template.body(pi)  # an older version, still packaged beside the current one
    put_function_artifact(cloud.s3, "pijobs-artifacts", artifact_key("pi", "0.9", TEMPLATE_FILE), old)
    cloud.ddb.update_item(
        TableName=cloud.table,
        Key={"pk": {"S": f"job#{job_id}"}},
        UpdateExpression="SET #v = :v",
        ExpressionAttributeNames={"#v": "version"},
        ExpressionAttributeValues={":v": {"S": "0.9"}},
    )

    assert cloud.dispatch(cloud.receive()) == []

    (stack,) = cloud.live_stacks()
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    # A presigned GET of that version's artifact (NoEcho on AWS; moto does not mask it), in the UserData.
    assert "/functions/pi/0.9/worker.zip?" in parameters["WorkerArtifactUrl"]
    instance = cloud.instance_of(job_id)
    assert instance is not None
    user_data = cloud.ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    shim = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert "pijobs-artifacts.s3.amazonaws.com/functions/pi/0.9/worker.zip?" in shim
    assert cloud.job(job_id).status.value == "PROVISIONING"


@pytest.mark.usefixtures("wordcount_plugin")
def test_a_job_whose_function_was_disabled_since_fails_plainly(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = cloud.api("POST", "/jobs", {"function": "word-count", "params": {"text": "a b"}})[1]["job_id"]
    monkeypatch.setenv("PIJOBS_ENABLED_FUNCTIONS", "pi")
    pijobs.dispatcher.handler.services.cache_clear()

    assert cloud.dispatch(cloud.receive()) == []  # handled: not retried, not dead-lettered

    job = cloud.job(job_id)
    assert job.status.value == "FAILED" and job.error is not None
    assert job.error.code == "function_unavailable" and "no longer offered" in job.error.message
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]
