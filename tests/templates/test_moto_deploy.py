"""The primary template and every function's template deploy into moto's CloudFormation the way the
embedded stack and the dispatcher use them."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from pijobs import job_template
from pijobs.api_handler.routes import ALL_OPERATIONS
from pijobs.deploy import deploy_primary_local
from pijobs.shared.functions import TEMPLATE_FILE, artifact_key, installed_functions, job_stack_parameters
from pijobs.shared.hooks import HOOK_SCOPE, HOOKS_INDEX
from pijobs.shared.settings import ApiSettings, DispatcherSettings
from pijobs.shared.store import (
    DONE_SHARD,
    FINISHED_INDEX,
    LIVE_INDEX,
    LIVE_SHARD,
    OWNER_INDEX,
    WAIT_SHARD,
    WAIT_TAG,
    WAITING_INDEX,
)
from pijobs.shared.uploads import UPLOADER, UPLOADS_INDEX

JOB_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "T" * 43
STACK_NAME = f"pijob-{JOB_ID}-1"  # the dispatcher names stacks pijob-<job id>-<attempt>
LOCAL_STACK_OUTPUTS = {
    "ApiUrl",
    "RestApiId",
    "TableName",
    "QueueUrl",
    "DeadLetterQueueUrl",
    "ResultsBucket",
    "DispatcherFunctionName",
    "EventSourceMappingId",
    "CfnServiceRoleArn",
    "FunctionsUrl",
    "UploadsQueueUrl",
    "VerifierEventSourceMappingId",
}
PARAMS = {
    "pi": {"digits": 1000},
    "sql": {"query": "SELECT * FROM t", "inputs": {"t": "0" * 32}},
    "word-count": {"text": "a b a", "top": 3},
}


def function_env(aws: dict[str, Any], name: str) -> dict[str, str]:
    config = aws["lambda"].get_function_configuration(FunctionName=name)
    return {k: str(v) for k, v in config["Environment"]["Variables"].items()}


def create_job_stack(
    aws: dict[str, Any], outputs: dict[str, str], job_id: str = JOB_ID, function_name: str = "pi"
) -> str:
    """CreateStack exactly as the dispatcher does it: the dispatcher's settings as deployed, the function's
    versioned template URL, the role, the platform's and the function's parameters, tags."""
    settings = DispatcherSettings.from_env(function_env(aws, outputs["DispatcherFunctionName"]))
    function = settings.functions().get(function_name)
    parameters = job_stack_parameters(
        function,
        function.parse_params(PARAMS[function_name]),
        job_id=job_id,
        deadline_seconds=900,
        artifact_url=f"https://{settings.artifacts_bucket}.s3.amazonaws.com/functions/x/worker.zip?X-Amz-Signature=s",
        token=TOKEN,
        fixed=settings.stack_parameters,
    )
    response = aws["cloudformation"].create_stack(
        StackName=f"pijob-{job_id}-1",
        TemplateURL=settings.template_url(artifact_key(function.name, function.version, TEMPLATE_FILE)),
        RoleARN=settings.cfn_role_arn,
        ClientRequestToken=f"pijob-{job_id}-1",
        OnFailure="DELETE",
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Tags=[
            {"Key": "JobId", "Value": job_id},
            {"Key": "Owner", "Value": "key1"},
            {"Key": "CostCenter", "Value": "42"},
        ],
    )
    return str(response["StackId"])


def job_instances(aws: dict[str, Any], job_id: str = JOB_ID) -> list[dict[str, Any]]:
    reservations = aws["ec2"].describe_instances(Filters=[{"Name": "tag:JobId", "Values": [job_id]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


@pytest.fixture
def outputs(aws: dict[str, Any]) -> dict[str, str]:
    return deploy_primary_local(aws["cloudformation"], aws["s3"], aws["ec2"], stack_name="pijobs", params={})


def test_primary_stack_is_complete_with_the_outputs_the_local_stack_needs(
    aws: dict[str, Any], outputs: dict[str, str]
) -> None:
    status = aws["cloudformation"].describe_stacks(StackName="pijobs")["Stacks"][0]["StackStatus"]

    assert status == "CREATE_COMPLETE"
    assert outputs.keys() >= LOCAL_STACK_OUTPUTS
    assert outputs["ApiUrl"] == f"https://{outputs['RestApiId']}.execute-api.us-east-1.amazonaws.com/v1"
    assert outputs["FunctionsUrl"] == "https://pijobs-artifacts.s3.us-east-1.amazonaws.com/functions/"
    assert outputs["EnabledFunctions"] == "*"  # the embedded stack offers every installed function


def test_deploying_again_returns_the_same_stack(aws: dict[str, Any], outputs: dict[str, str]) -> None:
    again = deploy_primary_local(aws["cloudformation"], aws["s3"], aws["ec2"], stack_name="pijobs")

    assert again == outputs


def test_queue_table_and_mapping_follow_the_parameters(aws: dict[str, Any]) -> None:
    params = {"MaxActiveStacks": "4", "BatchSize": "3", "MaximumConcurrency": "2", "MaxReceiveCount": "7"}
    outputs = deploy_primary_local(
        aws["cloudformation"], aws["s3"], aws["ec2"], stack_name="p", params=params
    )

    queue = aws["sqs"].get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == 7
    assert redrive["deadLetterTargetArn"].endswith(outputs["DeadLetterQueueUrl"].rsplit("/", 1)[1])
    assert queue["VisibilityTimeout"] == "180"
    table = aws["dynamodb"].describe_table(TableName=outputs["TableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    indexes = {index["IndexName"]: index["KeySchema"] for index in table["GlobalSecondaryIndexes"]}
    assert indexes == {
        OWNER_INDEX: [
            {"AttributeName": "owner", "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
        LIVE_INDEX: [{"AttributeName": LIVE_SHARD, "KeyType": "HASH"}],
        WAITING_INDEX: [
            {"AttributeName": WAIT_SHARD, "KeyType": "HASH"},
            {"AttributeName": WAIT_TAG, "KeyType": "RANGE"},
        ],
        FINISHED_INDEX: [
            {"AttributeName": DONE_SHARD, "KeyType": "HASH"},
            {"AttributeName": "finished_at", "KeyType": "RANGE"},
        ],
        UPLOADS_INDEX: [
            {"AttributeName": UPLOADER, "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
        HOOKS_INDEX: [
            {"AttributeName": HOOK_SCOPE, "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
    }
    mapping = aws["lambda"].get_event_source_mapping(UUID=outputs["EventSourceMappingId"])
    assert mapping["BatchSize"] == 3
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["FunctionArn"].endswith(outputs["DispatcherFunctionName"])
    assert function_env(aws, outputs["DispatcherFunctionName"])["PIJOBS_MAX_ACTIVE_STACKS"] == "4"


def test_lambdas_get_their_handlers_and_environment(aws: dict[str, Any], outputs: dict[str, str]) -> None:
    functions = {f["Handler"]: f for f in aws["lambda"].list_functions()["Functions"]}

    assert set(functions) == {
        "pijobs.api_handler.handler.lambda_handler",
        "pijobs.dispatcher.handler.lambda_handler",
        "pijobs.dispatcher.reaper.lambda_handler",
        "pijobs.dispatcher.verifier.lambda_handler",
        "pijobs.api_handler.notifier.notifier_handler",
        "pijobs.api_handler.notifier.sender_handler",
    }
    dispatcher = function_env(aws, outputs["DispatcherFunctionName"])
    assert dispatcher["PIJOBS_TABLE_NAME"] == outputs["TableName"]
    assert dispatcher["PIJOBS_QUEUE_URL"] == outputs["QueueUrl"]
    assert dispatcher["PIJOBS_ARTIFACTS_URL"] + "functions/" == outputs["FunctionsUrl"]
    assert dispatcher["PIJOBS_ARTIFACTS_BUCKET"] == outputs["ArtifactsBucket"]
    assert dispatcher["PIJOBS_CFN_ROLE_ARN"] == outputs["CfnServiceRoleArn"]
    assert (dispatcher["PIJOBS_ENABLED_FUNCTIONS"], dispatcher["PIJOBS_FUNCTION_LIMITS"]) == ("*", "{}")
    fixed = json.loads(dispatcher["PIJOBS_STACK_PARAMETERS"])
    assert set(fixed) == {"ApiUrl", "SubnetId", "VpcId"}  # no table, bucket or instance profile any more
    assert fixed["ApiUrl"] == outputs["ApiUrl"]
    verifier = function_env(aws, functions["pijobs.dispatcher.verifier.lambda_handler"]["FunctionName"])
    assert verifier == {
        "PIJOBS_TABLE_NAME": outputs["TableName"],
        "PIJOBS_RESULTS_BUCKET": outputs["ResultsBucket"],
    }
    mapping = aws["lambda"].get_event_source_mapping(UUID=outputs["VerifierEventSourceMappingId"])
    assert mapping["EventSourceArn"].endswith(outputs["UploadsQueueUrl"].rsplit("/", 1)[1])
    assert mapping["FunctionArn"].endswith(outputs["VerifierFunctionName"])
    api = function_env(aws, functions["pijobs.api_handler.handler.lambda_handler"]["FunctionName"])
    defaults = ApiSettings.model_fields  # the handler's defaults are the template's
    assert (api["PIJOBS_UPLOAD_EXPIRY_DAYS"], api["PIJOBS_MAX_UPLOAD_BYTES"]) == (
        str(defaults["upload_expiry_days"].default),
        str(defaults["max_upload_bytes"].default),
    )


def test_api_has_every_route_with_its_key_requirement(aws: dict[str, Any], outputs: dict[str, str]) -> None:
    resources = aws["apigateway"].get_resources(restApiId=outputs["RestApiId"])["items"]

    routes = {
        (method, r["path"]): spec for r in resources for method, spec in r.get("resourceMethods", {}).items()
    }
    assert {route: spec["apiKeyRequired"] for route, spec in routes.items()} == {
        (op.method, op.path): op.api_key for op in ALL_OPERATIONS
    }


def test_job_stack_launches_one_locked_down_instance_and_deleting_it_terminates_it(
    aws: dict[str, Any], outputs: dict[str, str]
) -> None:
    stack_id = create_job_stack(aws, outputs)

    cfn, ec2 = aws["cloudformation"], aws["ec2"]
    stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    (instance,) = job_instances(aws)
    assert instance["State"]["Name"] == "running"
    assert {"Key": "JobId", "Value": JOB_ID} in instance["Tags"]
    assert {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}["InstanceId"] == instance[
        "InstanceId"
    ]
    assert "KeyName" not in instance
    assert instance["InstanceType"] == "c7i.large"
    assert "IamInstanceProfile" not in instance  # no credentials on the instance
    volume_ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    assert all(v["Encrypted"] for v in ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"])
    user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert (
        f'timeout --kill-after=30 "$deadline_seconds" python3.11 -m pijobs.worker --job-id "{JOB_ID}"'
        in script
    )
    assert f'PIJOBS_WORKER_TOKEN="{TOKEN}"' in script and f'PIJOBS_API_URL="{outputs["ApiUrl"]}"' in script
    assert "aws s3" not in script and "AWS_" not in script and "TABLE" not in script
    assert "deadline_seconds=900" in script
    assert "${" not in script

    # moto applies no launch template to an instance CloudFormation creates: check the template itself.
    template_id = cfn.describe_stack_resource(StackName=stack_id, LogicalResourceId="WorkerLaunchTemplate")
    versions = ec2.describe_launch_template_versions(
        LaunchTemplateId=template_id["StackResourceDetail"]["PhysicalResourceId"]
    )["LaunchTemplateVersions"]
    options = versions[0]["LaunchTemplateData"]["MetadataOptions"]
    assert options["HttpTokens"] == "required"
    assert options["HttpPutResponseHopLimit"] == 1
    group_id = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}["SecurityGroupId"]
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["IpPermissions"] == []

    cfn.delete_stack(StackName=STACK_NAME)

    assert cfn.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE"
    assert [i["State"]["Name"] for i in job_instances(aws)] == ["terminated"]


@pytest.mark.parametrize("function_name", sorted(installed_functions()))
def test_every_function_template_creates_its_stack_from_the_versioned_key(
    aws: dict[str, Any], outputs: dict[str, str], function_name: str
) -> None:
    stack_id = create_job_stack(aws, outputs, function_name=function_name)

    stack = aws["cloudformation"].describe_stacks(StackName=stack_id)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    version = installed_functions()[function_name].version
    assert parameters["JobId"] == JOB_ID and version  # the artifact URL: the dispatcher's presigned GET
    (instance,) = job_instances(aws)
    assert instance["State"]["Name"] == "running"
    function = installed_functions()[function_name]
    key = artifact_key(function.name, version, TEMPLATE_FILE)
    uploaded = aws["s3"].get_object(Bucket="pijobs-artifacts", Key=key)["Body"].read()
    assert uploaded == job_template.body(function)  # the platform's rendering, under the version's key
    tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
    assert {name: tags[name] for name in function.stack_parameter_names} == {
        name: parameters[name] for name in function.stack_parameter_names
    }


def test_a_second_create_for_the_same_job_is_refused(aws: dict[str, Any], outputs: dict[str, str]) -> None:
    create_job_stack(aws, outputs)

    with pytest.raises(aws["cloudformation"].exceptions.AlreadyExistsException):
        create_job_stack(aws, outputs)
    assert len(job_instances(aws)) == 1


def test_reaper_runs_every_minute(aws: dict[str, Any], outputs: dict[str, str]) -> None:
    events = boto3.client("events", region_name="us-east-1")

    (rule,) = events.list_rules()["Rules"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"].endswith(":function:" + outputs["ReaperFunctionName"])
