"""The CloudWatch dashboard in the primary template shows what pijobs emits, under the names it emits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from pijobs.shared import metrics

PRIMARY = Path(__file__).resolve().parents[2] / "infra" / "primary.yaml"


class _Loader(yaml.SafeLoader):
    """A template with its short-form functions kept as their long form (``!Sub x`` -> ``{"Fn::Sub": x}``)."""


def _long_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _long_form)


def _template() -> dict[str, Any]:
    return yaml.load(PRIMARY.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader


def _dashboard(template: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The dashboard's body as JSON and the names it substitutes: its own variables by their values, a
    parameter of seconds by a number (the body uses it unquoted), anything else by ``x``."""
    (body,) = [
        r["Properties"]["DashboardBody"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    text, variables = body["Fn::Sub"]
    substituted = set(re.findall(r"\$\{([^}]+)\}", text))
    values = {name: str(value) for name, value in variables.items()}
    resolved = re.sub(
        r"\$\{([^}]+)\}", lambda m: values.get(m.group(1), "7" if "Seconds" in m.group(1) else "x"), text
    )
    return json.loads(resolved), substituted


def _metric_rows(body: dict[str, Any]) -> list[list[Any]]:
    return [row for w in body["widgets"] if w["type"] == "metric" for row in w["properties"]["metrics"]]


def test_the_dashboard_graphs_every_metric_pijobs_emits_and_no_other() -> None:
    body, _ = _dashboard(_template())

    ours = [row for row in _metric_rows(body) if row[0] == metrics.NAMESPACE]

    assert {row[1] for row in ours} == set(metrics.METRIC_NAMES)
    assert all(row[2] == metrics.STACK_DIMENSION and row[3] == "x" for row in ours)  # ${AWS::StackName}


def test_phase_durations_are_shown_as_p50_and_p95() -> None:
    body, _ = _dashboard(_template())

    stats = {
        (row[1], row[4]["stat"]) for row in _metric_rows(body) if row[1].endswith("Seconds") and len(row) > 4
    }

    assert stats >= {(phase.metric, stat) for phase in metrics.PHASES for stat in ("p50", "p95")}


def test_the_queues_and_every_alarm_of_the_template_are_on_it() -> None:
    template = _template()
    body, substituted = _dashboard(template)

    sqs = {(row[1], row[3]) for row in _metric_rows(body) if row[0] == "AWS/SQS"}
    alarms = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]

    assert {"JobsQueue.QueueName", "DeadLetterQueue.QueueName"} <= substituted
    assert ("ApproximateNumberOfMessagesVisible", "x") in sqs and (
        "ApproximateAgeOfOldestMessage",
        "x",
    ) in sqs
    assert len(alarms) >= 4 and set(alarms) <= substituted  # Ref: the alarm's name, in its ARN
    assert len(alarm_widget["properties"]["alarms"]) == len(alarms)
    assert {w["type"] for w in body["widgets"]} == {"metric", "alarm"}


def test_the_dashboard_deploys_with_the_stack_names_filled_in(aws: dict[str, Any]) -> None:
    import boto3

    from pijobs.deploy import deploy_primary_local

    outputs = deploy_primary_local(aws["cloudformation"], aws["s3"], aws["ec2"], stack_name="ops")

    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    body = json.loads(cloudwatch.get_dashboard(DashboardName="pijobs-ops")["DashboardBody"])
    rows = _metric_rows(body)
    queue_name = outputs["QueueUrl"].rsplit("/", 1)[1]
    assert ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", queue_name] in [r[:4] for r in rows]
    assert [metrics.NAMESPACE, metrics.ACTIVE_STACKS, metrics.STACK_DIMENSION, "ops"] in [r[:4] for r in rows]
