"""Request validation: good bodies become requests, bad ones name the field."""

from __future__ import annotations

from typing import Any

import pytest

from pijobs.api_handler.service import Submission, parse_per_run_execute, parse_submission
from pijobs.shared.errors import ValidationError
from pijobs.shared.functions import load_registry
from pijobs.shared.models import JobMessage
from pijobs.worker.pi.function import PiFunction

MAX = 10_000_000
REGISTRY = load_registry(["pi"], {"pi": {"max_digits": MAX}}, installed={"pi": PiFunction()})


def parse_pi_request(body: dict[str, Any], max_digits: int) -> Any:
    """The pi shorthand: what the submission's parameters and labels came out as."""
    submission = parse_submission(REGISTRY, body)
    assert submission.function.name == "pi"
    return _flat(submission)


def _flat(submission: Submission) -> Any:
    class Flat:
        digits = submission.params.digits  # type: ignore[attr-defined]
        cost_center = submission.cost_center
        name = submission.name

    return Flat


@pytest.mark.parametrize(
    "body",
    [
        {"digits": 1},
        {"digits": MAX},
        {"digits": 15000, "cost_center": "12345", "name": "my run"},
        {"digits": 5, "cost_center": None},
    ],
)
def test_good_bodies_are_accepted(body: dict[str, Any]) -> None:
    request = parse_pi_request(body, MAX)
    assert request.digits == body["digits"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "digits"),
        ({"digits": 0}, "digits"),
        ({"digits": -5}, "digits"),
        ({"digits": MAX + 1}, "digits"),
        ({"digits": "100"}, "digits"),
        ({"digits": 10.5}, "digits"),
        ({"digits": True}, "digits"),
        ({"digits": None}, "digits"),
        ({"digits": 10, "instance_type": "p5.48xlarge"}, "instance_type"),
        ({"digits": 10, "cost_center": 12}, "cost_center"),
        ({"digits": 10, "cost_center": "bad center!"}, "cost_center"),
        ({"digits": 10, "name": "x" * 129}, "name"),
        ({"digits": 10, "name": "line\nbreak"}, "name"),
    ],
)
def test_bad_bodies_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_pi_request(body, MAX)
    assert field in [detail["field"] for detail in info.value.details]


@pytest.mark.parametrize(
    ("body", "digits", "cost_center", "name"),
    [
        ({"StackName": "s", "CostCenter": "12345", "DigitsToCalculate": 100}, 100, "12345", "s"),
        ({"StackName": "s", "CostCenter": "12345", "DigitsToCalculate": "15000"}, 15000, "12345", "s"),
        ({"DigitsToCalculate": " 42 "}, 42, None, None),
        ({"CostCenter": 12345, "DigitsToCalculate": 7}, 7, "12345", None),
    ],
)
def test_per_run_execute_maps_onto_the_same_request(
    body: dict[str, Any], digits: int, cost_center: str | None, name: str | None
) -> None:
    request = _flat(parse_per_run_execute(REGISTRY, body))
    assert (request.digits, request.cost_center, request.name) == (digits, cost_center, name)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"StackName": "s"}, "DigitsToCalculate"),
        ({"DigitsToCalculate": "ten"}, "DigitsToCalculate"),
        ({"DigitsToCalculate": "-3"}, "DigitsToCalculate"),
        ({"DigitsToCalculate": 0}, "DigitsToCalculate"),
        ({"DigitsToCalculate": MAX + 1}, "DigitsToCalculate"),
        ({"DigitsToCalculate": 5, "InstanceType": "x"}, "InstanceType"),
        ({"DigitsToCalculate": 5, "StackName": ["a"]}, "StackName"),
    ],
)
def test_per_run_execute_rejects_bad_bodies(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_per_run_execute(REGISTRY, body)
    assert field in [detail["field"] for detail in info.value.details]


def test_queue_message_rejects_anything_but_a_job_pointer() -> None:
    assert JobMessage.model_validate_json('{"job_id": "' + "a" * 32 + '"}').deferrals == 0
    for bad in ('{"job_id": "../etc"}', '{"job_id": "' + "a" * 32 + '", "x": 1}', "not json"):
        with pytest.raises(ValueError):
            JobMessage.model_validate_json(bad)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"function": "pi"}, "params.digits"),
        ({"function": "pi", "params": {"digits": 0}}, "params.digits"),
        ({"function": "pi", "params": {"digits": MAX + 1}}, "params.digits"),
        ({"function": "pi", "params": {"digits": 10, "workers": 8}}, "params.workers"),
        ({"function": "pi", "params": "10"}, "params"),
        ({"function": "nope", "params": {}}, "function"),
        ({"function": "", "params": {}}, "function"),
        ({"function": 7, "params": {}}, "function"),
        ({"function": "pi", "params": {"digits": 1}, "priority": 1}, "priority"),
        ({"function": "pi", "params": {"digits": 1}, "name": "a\tb"}, "name"),
    ],
)
def test_the_generic_body_names_the_field_by_its_path(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_submission(REGISTRY, body)
    assert [detail["field"] for detail in info.value.details] == [field]


def test_the_generic_body_and_the_shorthand_make_the_same_submission() -> None:
    generic = parse_submission(REGISTRY, {"function": "pi", "params": {"digits": 7}, "name": "n"})
    shorthand = parse_submission(REGISTRY, {"digits": 7, "name": "n"})
    assert generic == shorthand
    assert generic.params.model_dump() == {"digits": 7}  # type: ignore[attr-defined]


def test_the_shorthand_is_refused_when_pi_is_not_enabled() -> None:
    with pytest.raises(ValidationError) as info:
        parse_submission(load_registry([], installed={"pi": PiFunction()}), {"digits": 7})
    assert info.value.details == [{"field": "function", "problem": "must be one of: none"}]
