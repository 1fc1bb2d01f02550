"""Every IAM role of the templates grants exactly the intended actions on exactly the intended resources.

Resources are compared as text: ``!Ref X`` -> ``${X}``, ``!GetAtt A.B`` -> ``${A.B}``, ``!Sub s`` -> s.
``*`` resources are allowed only where the action supports no resource-level permission (listed below).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cfnlint", reason="cfn-lint is in the templates dependency group")

from cfnlint.decode.decode import decode_str

from pijobs import job_template
from pijobs.shared.functions import (
    DEADLINE_RANGE,
    FUNCTIONS_PREFIX,
    PLATFORM_PARAMETERS,
    SUPPORTED_INSTANCE_TYPES,
    SUPPORTED_RESOURCE_TYPES,
    TEMPLATE_FILE,
    WORKER_FILE,
    BusinessFunction,
    installed_functions,
)
from pijobs.shared.hooks import DELIVERY_PREFIX, WEBHOOK_PREFIX
from pijobs.shared.inputs import UPLOADS_PREFIX, upload_key
from pijobs.shared.lifecycle import EVENT_PREFIX
from pijobs.shared.uploads import UPLOAD_ITEM_PREFIX

INFRA = Path(__file__).resolve().parents[2] / "infra"
FUNCTIONS = sorted(installed_functions().values(), key=lambda f: f.name)
ARN = "arn:${AWS::Partition}"
EC2 = f"{ARN}:ec2:${{AWS::Region}}:${{AWS::AccountId}}"
JOB_STACKS = f"{ARN}:cloudformation:${{AWS::Region}}:${{AWS::AccountId}}:stack/pijob-*/*"
AMI_PARAMETERS = f"{ARN}:ssm:${{AWS::Region}}::parameter/aws/service/ami-amazon-linux-latest/*"
TEMPLATE_OBJECT = f"{ARN}:s3:::${{ArtifactsBucket}}/{FUNCTIONS_PREFIX}*/{TEMPLATE_FILE}"
WORKER_OBJECT = f"{ARN}:s3:::${{ArtifactsBucket}}/{FUNCTIONS_PREFIX}*/{WORKER_FILE}"
INSTANCE_TYPES = list(SUPPORTED_INSTANCE_TYPES)
# What the service role must allow for each resource type a function's template may declare.
ACTIONS_FOR_TYPE = {
    "AWS::EC2::Instance": {"ec2:RunInstances", "ec2:TerminateInstances"},
    "AWS::EC2::LaunchTemplate": {"ec2:CreateLaunchTemplate", "ec2:DeleteLaunchTemplate"},
    "AWS::EC2::SecurityGroup": {"ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup"},
}

# (role, Sid) -> (actions, resources)
EXPECTED: dict[str, dict[str, tuple[set[str], set[str]]]] = {
    "ApiHandlerRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, {"${ApiHandlerLogGroup.Arn}"}),
        "JobAndIdempotencyRecords": (
            {"dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
            {"${JobsTable.Arn}"},
        ),
        "ListOwnJobs": ({"dynamodb:Query"}, {"${JobsTable.Arn}/index/owner-created-index"}),
        "Enqueue": ({"sqs:SendMessage"}, {"${JobsQueue.Arn}"}),
        "PresignResults": ({"s3:GetObject"}, {"${ResultsBucket.Arn}/results/*"}),
        "ListOwnUploads": ({"dynamodb:Query"}, {"${JobsTable.Arn}/index/uploads-index"}),
        "PresignAndDeleteUploads": (
            {"s3:PutObject", "s3:DeleteObject", "s3:GetObject"},
            {f"${{ResultsBucket.Arn}}/{UPLOADS_PREFIX}*"},
        ),
        "PresignResultPosts": ({"s3:PutObject"}, {"${ResultsBucket.Arn}/results/*"}),
        "EndAttempts": ({"cloudformation:DeleteStack"}, {JOB_STACKS}),
        "ListOwnWebhooksAndDeliveries": ({"dynamodb:Query"}, {"${JobsTable.Arn}/index/hooks-index"}),
        "QueueTestDeliveries": ({"sqs:SendMessage"}, {"${WebhooksQueue.Arn}"}),
    },
    "NotifierRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, {"${NotifierLogGroup.Arn}"}),
        "ReadTheStream": (
            {
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            },
            {"${JobsTable.StreamArn}"},
        ),
        "ReadJobsAndWebhooks": ({"dynamodb:GetItem"}, {"${JobsTable.Arn}"}),
        "MakeDeliveries": ({"dynamodb:PutItem"}, {"${JobsTable.Arn}"}),
        "ListOwnersWebhooks": ({"dynamodb:Query"}, {"${JobsTable.Arn}/index/hooks-index"}),
        "QueueDeliveries": ({"sqs:SendMessage"}, {"${WebhooksQueue.Arn}", "${NotifierDeadLetterQueue.Arn}"}),
        "PublishStateChanges": (
            {"events:PutEvents"},
            {"arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"},
        ),
    },
    "SenderRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, {"${SenderLogGroup.Arn}"}),
        "OwnQueue": (
            {
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            },
            {"${WebhooksQueue.Arn}"},
        ),
        "DeliveriesAndWebhooks": (
            {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
            {"${JobsTable.Arn}"},
        ),
        "CallbackSecrets": ({"dynamodb:GetItem"}, {"${JobsTable.Arn}"}),
    },
    "VerifierRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, {"${VerifierLogGroup.Arn}"}),
        "ConsumeUploadEvents": (
            {
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
            },
            {"${UploadsQueue.Arn}"},
        ),
        "ReadAndDeleteUploads": (
            {"s3:GetObject", "s3:DeleteObject"},
            {f"${{ResultsBucket.Arn}}/{UPLOADS_PREFIX}*"},
        ),
        "UploadRecordsOnly": ({"dynamodb:GetItem", "dynamodb:UpdateItem"}, {"${JobsTable.Arn}"}),
    },
    "DispatcherRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, {"${DispatcherLogGroup.Arn}"}),
        "ConsumeAndTick": (
            {
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            },
            {"${JobsQueue.Arn}"},
        ),
        "JobRecordsCapacityAndTenants": (
            {"dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
            {"${JobsTable.Arn}"},
        ),
        "ReadTheWaitingJobsInFairOrder": ({"dynamodb:Query"}, {"${JobsTable.Arn}/index/waiting-index"}),
        "CreateJobStacksFromFunctionTemplatesWithOurRole": ({"cloudformation:CreateStack"}, {JOB_STACKS}),
        "DescribeAndDeleteJobStacks": (
            {"cloudformation:DeleteStack", "cloudformation:DescribeStacks"},
            {JOB_STACKS},
        ),
        "PassOnlyTheServiceRole": ({"iam:PassRole"}, {"${CfnServiceRole.Arn}"}),
        "ReadTheFunctionTemplates": ({"s3:GetObject"}, {TEMPLATE_OBJECT}),
        "PresignTheWorkerArtifacts": ({"s3:GetObject"}, {WORKER_OBJECT}),
        "ResolveTheImageParameter": ({"ssm:GetParameters"}, {AMI_PARAMETERS}),
    },
    "ReaperRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, {"${ReaperLogGroup.Arn}"}),
        "JobRecordsAndCapacity": (
            {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
            {"${JobsTable.Arn}"},
        ),
        "LiveWaitingAndFinishedJobsThroughTheirIndexes": (
            {"dynamodb:Query"},
            {
                "${JobsTable.Arn}/index/live-index",
                "${JobsTable.Arn}/index/waiting-index",
                "${JobsTable.Arn}/index/finished-index",
            },
        ),
        "InspectAndDeleteJobStacks": (
            {
                "cloudformation:DeleteStack",
                "cloudformation:DescribeStackEvents",
                "cloudformation:DescribeStacks",
            },
            {JOB_STACKS},
        ),
        "RequeueRetries": ({"sqs:SendMessage"}, {"${JobsQueue.Arn}"}),
        "FindOrphanStacks": ({"cloudformation:ListStacks"}, {"*"}),
    },
    "CfnServiceRole": {
        "Describe": (
            {
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeSecurityGroupRules",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcs",
            },
            {"*"},
        ),
        "CreateSecurityGroupInTheJobVpc": (
            {"ec2:CreateSecurityGroup"},
            {f"{EC2}:security-group/*", f"{EC2}:vpc/${{VpcId}}"},
        ),
        "SetEgressRules": (
            {"ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress"},
            {f"{EC2}:security-group/*", f"{EC2}:security-group-rule/*"},
        ),
        "CreateLaunchTemplate": ({"ec2:CreateLaunchTemplate"}, {f"{EC2}:launch-template/*"}),
        "DeleteOnlyJobResources": (
            {"ec2:DeleteLaunchTemplate", "ec2:DeleteSecurityGroup", "ec2:TerminateInstances"},
            {f"{EC2}:instance/*", f"{EC2}:launch-template/*", f"{EC2}:security-group/*"},
        ),
        "RunOnlyAllowedInstanceTypes": ({"ec2:RunInstances"}, {f"{EC2}:instance/*"}),
        "RunInstancesUsing": (
            {"ec2:RunInstances"},
            {
                f"{ARN}:ec2:${{AWS::Region}}::image/*",
                f"{EC2}:launch-template/*",
                f"{EC2}:network-interface/*",
                f"{EC2}:security-group/*",
                f"{EC2}:subnet/${{SubnetId}}",
                f"{EC2}:volume/*",
            },
        ),
        "TagOnCreate": (
            {"ec2:CreateTags"},
            {
                f"{EC2}:instance/*",
                f"{EC2}:launch-template/*",
                f"{EC2}:network-interface/*",
                f"{EC2}:security-group/*",
                f"{EC2}:security-group-rule/*",
                f"{EC2}:volume/*",
            },
        ),
        "ResolveTheImageParameter": ({"ssm:GetParameters"}, {AMI_PARAMETERS}),
    },
}
TRUSTED_SERVICE = {
    "ApiHandlerRole": "lambda.amazonaws.com",
    "DispatcherRole": "lambda.amazonaws.com",
    "ReaperRole": "lambda.amazonaws.com",
    "VerifierRole": "lambda.amazonaws.com",
    "NotifierRole": "lambda.amazonaws.com",
    "SenderRole": "lambda.amazonaws.com",
    "CfnServiceRole": "cloudformation.amazonaws.com",
    "ApiGatewayCloudWatchRole": "apigateway.amazonaws.com",
}
WILDCARD_RESOURCE_ALLOWED = {("ReaperRole", "FindOrphanStacks"), ("CfnServiceRole", "Describe")}


def load(name: str | Path) -> dict[str, Any]:
    template, errors = decode_str((INFRA / name).read_text())
    assert not errors
    assert template is not None
    return dict(template)


def job(function: BusinessFunction) -> dict[str, Any]:
    """A function's job template as the platform uploads it."""
    template, errors = decode_str(job_template.body(function).decode())
    assert not errors
    assert template is not None
    return dict(template)


def render(value: Any) -> str:
    """One resource expression as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"${{{argument}}}"
        if function == "Fn::GetAtt":
            return "${" + ".".join(argument) + "}"
        if function == "Fn::Sub" and isinstance(argument, str):
            return argument
    raise AssertionError(f"unexpected resource expression {value!r}")


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def statements(role: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Sid"] not in found, f"duplicate Sid {statement['Sid']}"
            found[statement["Sid"]] = statement
    return found


@pytest.fixture(scope="module")
def primary() -> dict[str, Any]:
    return load("primary.yaml")


@pytest.fixture(scope="module")
def roles(primary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in primary["Resources"].items() if v["Type"] == "AWS::IAM::Role"}


def test_every_role_is_known_and_trusts_one_service(roles: dict[str, dict[str, Any]]) -> None:
    assert set(roles) == set(TRUSTED_SERVICE)
    for name, role in roles.items():
        (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust == trust | {"Effect": "Allow", "Action": "sts:AssumeRole"}
        assert trust["Principal"] == {"Service": TRUSTED_SERVICE[name]}, name


@pytest.mark.parametrize("role_name", sorted(EXPECTED))
def test_role_grants_exactly_the_intended_actions_and_resources(
    roles: dict[str, dict[str, Any]], role_name: str
) -> None:
    found = statements(roles[role_name])

    assert set(found) == set(EXPECTED[role_name])
    for sid, (actions, resources) in EXPECTED[role_name].items():
        statement = found[sid]
        assert statement["Effect"] == "Allow"
        assert set(as_list(statement["Action"])) == actions, sid
        assert {render(r) for r in as_list(statement["Resource"])} == resources, sid
    assert "ManagedPolicyArns" not in roles[role_name]["Properties"]


@pytest.mark.parametrize("role_name", sorted(EXPECTED))
def test_no_wildcard_actions_and_wildcard_resources_only_where_iam_has_no_other(
    roles: dict[str, dict[str, Any]], role_name: str
) -> None:
    for sid, statement in statements(roles[role_name]).items():
        assert all("*" not in action for action in as_list(statement["Action"])), sid
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        if "*" in as_list(statement["Resource"]):
            assert (role_name, sid) in WILDCARD_RESOURCE_ALLOWED


def test_dispatcher_creates_stacks_only_from_our_template_with_our_role(
    roles: dict[str, dict[str, Any]],
) -> None:
    found = statements(roles["DispatcherRole"])

    condition = found["CreateJobStacksFromFunctionTemplatesWithOurRole"]["Condition"]
    assert set(condition) == {"StringEquals", "StringLike"}
    assert render(condition["StringEquals"]["cloudformation:RoleArn"]) == "${CfnServiceRole.Arn}"
    assert render(condition["StringLike"]["cloudformation:TemplateUrl"]) == (
        f"https://${{ArtifactsBucket}}.s3.${{AWS::Region}}.${{AWS::URLSuffix}}/{FUNCTIONS_PREFIX}*/{TEMPLATE_FILE}"
    )
    pass_role = found["PassOnlyTheServiceRole"]["Condition"]["StringEquals"]
    assert pass_role == {"iam:PassedToService": "cloudformation.amazonaws.com"}


def test_service_role_launches_only_allowed_types_and_deletes_only_job_resources(
    roles: dict[str, dict[str, Any]],
) -> None:
    found = statements(roles["CfnServiceRole"])

    run = found["RunOnlyAllowedInstanceTypes"]["Condition"]["StringEquals"]["ec2:InstanceType"]
    assert run == INSTANCE_TYPES
    assert found["DeleteOnlyJobResources"]["Condition"] == {"Null": {"aws:ResourceTag/JobId": "false"}}
    assert not any("iam:PassRole" in as_list(s["Action"]) for s in found.values())  # no instance profile
    assert set(found["TagOnCreate"]["Condition"]["StringEquals"]["ec2:CreateAction"]) == {
        "AuthorizeSecurityGroupEgress",
        "CreateLaunchTemplate",
        "CreateSecurityGroup",
        "RunInstances",
    }


def _templates() -> dict[str, dict[str, Any]]:
    """The primary template and every installed function's job template."""
    found = {"primary.yaml": load("primary.yaml")}
    for function in installed_functions().values():
        found[f"function {function.name}"] = job(function)
    return found


def test_no_role_that_ec2_can_assume_grants_anything() -> None:
    """A job's instance holds no credentials: no template has a role an instance could assume that allows
    anything (today there is none at all), and no instance profile."""
    for name, template in _templates().items():
        for logical, resource in template.get("Resources", {}).items():
            kind = resource["Type"]
            assert kind != "AWS::IAM::InstanceProfile", f"{name}: {logical} is an instance profile"
            if kind != "AWS::IAM::Role":
                continue
            trust = json.dumps(resource["Properties"]["AssumeRolePolicyDocument"])
            if "ec2.amazonaws.com" in trust:
                grants = resource["Properties"].get("Policies", []) + resource["Properties"].get(
                    "ManagedPolicyArns", []
                )
                assert grants == [], f"{name}: {logical}, trusted by EC2, grants {grants}"


def test_no_job_template_gives_its_instance_a_profile_a_key_or_a_way_in() -> None:
    """Every function's job template: no instance profile, no key pair, IMDSv2 with hop limit 1, no inbound
    rule, terminate on shutdown, the worker token and the artifact URL NoEcho and never an output."""
    for function in installed_functions().values():
        template = job(function)
        text = json.dumps(template)
        assert "IamInstanceProfile" not in text and "InstanceProfile" not in text, function.name
        resources = template["Resources"]
        for logical, resource in resources.items():
            properties = resource.get("Properties", {})
            assert "KeyName" not in properties, f"{function.name}: {logical} has a key pair"
            assert "SecurityGroupIngress" not in properties, f"{function.name}: {logical} lets in"
            assert resource["Type"] != "AWS::EC2::SecurityGroupIngress", f"{function.name}: {logical}"
            if resource["Type"] == "AWS::EC2::Instance":
                assert properties["InstanceInitiatedShutdownBehavior"] == "terminate"
            if resource["Type"] == "AWS::EC2::LaunchTemplate":
                options = properties["LaunchTemplateData"]["MetadataOptions"]
                assert (options["HttpTokens"], options["HttpPutResponseHopLimit"]) == ("required", 1)
        parameters = template["Parameters"]
        assert (
            parameters["WorkerToken"]["NoEcho"] is True and parameters["WorkerArtifactUrl"]["NoEcho"] is True
        )
        outputs = json.dumps(template.get("Outputs", {}))
        assert "WorkerToken" not in outputs and "WorkerArtifactUrl" not in outputs


def test_the_service_role_passes_no_role_to_ec2(roles: dict[str, dict[str, Any]]) -> None:
    for name, role in roles.items():
        for statement in statements(role).values():
            if "iam:PassRole" in as_list(statement["Action"]):
                passed_to = statement.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
                assert passed_to != "ec2.amazonaws.com", name


def test_the_verifier_touches_only_upload_items_and_reads_only_the_uploads_queue(
    roles: dict[str, dict[str, Any]], primary: dict[str, Any]
) -> None:
    found = statements(roles["VerifierRole"])

    leading_keys = found["UploadRecordsOnly"]["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    assert leading_keys == [f"{UPLOAD_ITEM_PREFIX}*"]
    mapping = primary["Resources"]["VerifierEventSourceMapping"]["Properties"]
    assert render(mapping["EventSourceArn"]) == "${UploadsQueue.Arn}"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (event,) = primary["Resources"]["ResultsBucket"]["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"
    ]
    assert render(event["Queue"]) == "${UploadsQueue.Arn}" and event["Event"] == "s3:ObjectCreated:*"
    assert event["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": UPLOADS_PREFIX}]
    (send,) = primary["Resources"]["UploadsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert send["Principal"] == {"Service": "s3.amazonaws.com"} and send["Action"] == "sqs:SendMessage"
    assert send["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def _leading_keys(statement: dict[str, Any]) -> list[str]:
    return list(statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"])


def test_the_webhook_sender_touches_only_its_items_and_its_queue(
    roles: dict[str, dict[str, Any]], primary: dict[str, Any]
) -> None:
    """It calls customers' URLs: it must hold nothing else (issue 25's SSRF rule)."""
    found = statements(roles["SenderRole"])

    assert _leading_keys(found["DeliveriesAndWebhooks"]) == [f"{DELIVERY_PREFIX}*", f"{WEBHOOK_PREFIX}*"]
    assert _leading_keys(found["CallbackSecrets"]) == ["job#*"]
    assert set(as_list(found["CallbackSecrets"]["Action"])) == {"dynamodb:GetItem"}
    assert not any(
        a.startswith(("s3:", "cloudformation:", "ec2:", "iam:"))
        for s in found.values()
        for a in as_list(s["Action"])
    )
    mapping = primary["Resources"]["SenderEventSourceMapping"]["Properties"]
    assert render(mapping["EventSourceArn"]) == "${WebhooksQueue.Arn}"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_notifier_reads_only_state_change_events_from_the_stream(
    roles: dict[str, dict[str, Any]], primary: dict[str, Any]
) -> None:
    found = statements(roles["NotifierRole"])
    assert _leading_keys(found["MakeDeliveries"]) == [f"{DELIVERY_PREFIX}*"]
    assert _leading_keys(found["ReadJobsAndWebhooks"]) == ["job#*"]
    mapping = primary["Resources"]["NotifierEventSourceMapping"]["Properties"]
    assert render(mapping["EventSourceArn"]) == "${JobsTable.StreamArn}"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert (
        render(mapping["DestinationConfig"]["OnFailure"]["Destination"]) == "${NotifierDeadLetterQueue.Arn}"
    )
    (pattern,) = mapping["FilterCriteria"]["Filters"]
    assert json.loads(pattern["Pattern"])["dynamodb"]["NewImage"]["pk"] == {"S": [{"prefix": EVENT_PREFIX}]}
    table = primary["Resources"]["JobsTable"]["Properties"]
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    alarm = primary["Resources"]["WebhookDeadLettersAlarm"]["Properties"]
    watched = {
        render(m["MetricStat"]["Metric"]["Dimensions"][0]["Value"])
        for m in alarm["Metrics"]
        if "MetricStat" in m
    }
    assert watched == {"${NotifierDeadLetterQueue.QueueName}", "${WebhooksDeadLetterQueue.QueueName}"}


def test_uploads_expire_by_the_buckets_lifecycle(primary: dict[str, Any]) -> None:
    rules = primary["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]

    (uploads,) = [rule for rule in rules if rule.get("Prefix") == UPLOADS_PREFIX]
    assert uploads["Status"] == "Enabled" and render(uploads["ExpirationInDays"]) == "${UploadExpiryDays}"
    assert primary["Parameters"]["UploadExpiryDays"]["Default"] == 7


def grants(statement: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an Allow statement covers ``action`` on ``resource`` (IAM's wildcards: '*' and '?')."""
    return (
        statement["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action, pattern) for pattern in as_list(statement["Action"]))
        and any(fnmatch.fnmatchcase(resource, render(pattern)) for pattern in as_list(statement["Resource"]))
    )


S3_READS = ("s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:ListBucket")


def test_only_the_api_presigns_an_upload_s_read_and_only_the_verifier_reads_one(
    roles: dict[str, dict[str, Any]], primary: dict[str, Any]
) -> None:
    """A job's instance (which has no role) reads its inputs through the GETs the worker channel's start
    presigned for it; the verifier reads each file once to check it; the API only signs those GETs."""
    an_upload = "${ResultsBucket.Arn}/" + upload_key("key-b", "f" * 32)
    readers = {
        role
        for role, found in ((r, statements(roles[r])) for r in roles)
        for statement in found.values()
        if grants(statement, "s3:GetObject", an_upload)
    }
    assert readers == {"ApiHandlerRole", "VerifierRole"}
    bucket_policy = primary["Resources"]["ResultsBucketPolicy"]["Properties"]["PolicyDocument"]
    assert all(statement["Effect"] == "Deny" for statement in bucket_policy["Statement"])


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.name)
def test_function_instance_types_are_within_the_service_role(function: BusinessFunction) -> None:
    allowed = job(function)["Parameters"]["InstanceType"]["AllowedValues"]

    assert set(function.instance_types) <= set(allowed) <= set(INSTANCE_TYPES)


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.name)
def test_the_service_role_can_create_what_each_function_template_declares(
    function: BusinessFunction, roles: dict[str, dict[str, Any]]
) -> None:
    """A template's resource types are the ones its function declares, which the service role allows."""
    declared = {r["Type"] for r in job(function)["Resources"].values()}
    granted = {a for s in statements(roles["CfnServiceRole"]).values() for a in as_list(s["Action"])}

    assert declared <= set(function.resource_types) <= SUPPORTED_RESOURCE_TYPES
    assert set(ACTIONS_FOR_TYPE) == SUPPORTED_RESOURCE_TYPES
    for resource_type in function.resource_types:
        assert ACTIONS_FOR_TYPE[resource_type] <= granted, resource_type


def test_results_bucket_denies_plain_http(primary: dict[str, Any]) -> None:
    (statement,) = primary["Resources"]["ResultsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]

    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    block = primary["Resources"]["ResultsBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert all(block.values())


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.name)
def test_function_template_parameters_are_the_dispatcher_contract(function: BusinessFunction) -> None:
    parameters = job(function)["Parameters"]

    required = {name for name, p in parameters.items() if "Default" not in p}
    assert set(PLATFORM_PARAMETERS) | set(function.stack_parameter_names) <= set(parameters)
    assert required <= set(PLATFORM_PARAMETERS) | set(function.stack_parameter_names)
    assert parameters["JobId"]["AllowedPattern"] == "[a-f0-9]{32}"
    assert parameters["ImageId"]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    deadline = parameters["DeadlineSeconds"]
    assert (deadline["MinValue"], deadline["MaxValue"]) == DEADLINE_RANGE  # the one range clamp_deadline uses


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.name)
def test_function_instance_is_locked_down(function: BusinessFunction) -> None:
    resources = job(function)["Resources"]

    group = resources["WorkerSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupEgress"]] == [
        ("tcp", 443, 443)
    ]
    options = resources["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert options["HttpTokens"] == "required"
    assert options["HttpPutResponseHopLimit"] == 1
    instance = resources["WorkerInstance"]["Properties"]
    assert "KeyName" not in instance
    assert instance["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert all(m["Ebs"]["Encrypted"] for m in instance["BlockDeviceMappings"])
    assert {"Key": "JobId", "Value": {"Ref": "JobId"}} in instance["Tags"]
    assert "IamInstanceProfile" not in instance


def test_rules_allow_exactly_the_visibility_timeouts_of_at_least_six_dispatcher_timeouts(
    primary: dict[str, Any],
) -> None:
    dispatcher_timeouts = [int(v) for v in primary["Parameters"]["DispatcherTimeout"]["AllowedValues"]]
    visibility_timeouts = [int(v) for v in primary["Parameters"]["QueueVisibilityTimeout"]["AllowedValues"]]
    rules = {
        int(rule["RuleCondition"]["Fn::Equals"][1]): rule["Assertions"][0]["Assert"]["Fn::Contains"][0]
        for rule in primary["Rules"].values()
    }

    for timeout in dispatcher_timeouts:
        allowed = [v for v in visibility_timeouts if v >= 6 * timeout]
        if allowed == visibility_timeouts:
            assert timeout not in rules  # every choice is long enough: no rule needed
        else:
            assert sorted(int(v) for v in rules[timeout]) == allowed, timeout
    defaults = primary["Parameters"]
    assert int(defaults["QueueVisibilityTimeout"]["Default"]) >= 6 * int(
        defaults["DispatcherTimeout"]["Default"]
    )


@pytest.mark.parametrize("path", [INFRA / "primary.yaml"], ids=lambda p: p.name)  # job templates skip none
def test_every_checkov_skip_says_why(path: Path) -> None:
    skips = [line.strip() for line in path.read_text().splitlines() if "checkov:skip=" in line]

    for skip in skips:
        check, _, reason = skip.removeprefix("# checkov:skip=").partition(":")
        assert check.startswith("CKV"), skip
        assert len(reason.split()) >= 6, f"{check} needs a real reason"
