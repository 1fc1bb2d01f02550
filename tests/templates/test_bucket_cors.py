"""The results bucket lets a browser do one thing cross-origin: POST (a presigned upload) from the console's
origins, i.e. the API's own execute-api origin and the origins a deployment adds in ConsoleOrigins (https
only). No other method, origin, header or exposed header; and the local stack applies the same rule."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("cfnlint", reason="cfn-lint is in the templates dependency group")

from pijobs.local.cfn import load_template, resources_of_type
from pijobs.local.stack import cors_configuration
from tests.templates.test_policies import INFRA, load

API_ORIGIN = "https://${RestApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"


@pytest.fixture(scope="module")
def primary() -> dict[str, Any]:
    return load("primary.yaml")


def rules(primary: dict[str, Any]) -> list[Any]:
    return list(primary["Resources"]["ResultsBucket"]["Properties"]["CorsConfiguration"]["CorsRules"])


def test_the_api_origin_may_post_and_nothing_else_is_allowed(primary: dict[str, Any]) -> None:
    own = rules(primary)[0]

    assert own["AllowedOrigins"] == [{"Fn::Sub": API_ORIGIN}]
    assert own["AllowedMethods"] == ["POST"]
    assert set(own) == {"Id", "AllowedOrigins", "AllowedMethods", "MaxAge"}  # no headers allowed or exposed


def test_extra_origins_are_a_conditional_rule_of_https_origins_allowed_to_post_only(
    primary: dict[str, Any],
) -> None:
    extra = rules(primary)[1]
    parameter = primary["Parameters"]["ConsoleOrigins"]

    condition, chosen, otherwise = extra["Fn::If"]
    assert condition == "HasConsoleOrigins" and otherwise == {"Ref": "AWS::NoValue"}
    assert chosen["AllowedOrigins"] == {"Ref": "ConsoleOrigins"}
    assert chosen["AllowedMethods"] == ["POST"]
    assert set(chosen) == {"Id", "AllowedOrigins", "AllowedMethods", "MaxAge"}
    assert parameter["Type"] == "CommaDelimitedList" and parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("https://jobs.example.com") and pattern.fullmatch("")
    for wide in ("*", "https://*.example.com", "http://jobs.example.com", "https://jobs.example.com/x"):
        assert not pattern.fullmatch(wide), wide
    assert len(rules(primary)) == 2


def test_the_local_stack_applies_the_same_rule_for_the_local_gateway_origin() -> None:
    declared = resources_of_type(load_template(INFRA / "primary.yaml"), "AWS::S3::Bucket")["ResultsBucket"]

    applied = cors_configuration(declared["CorsConfiguration"], "http://127.0.0.1:8080")

    assert applied == {
        "CORSRules": [
            {
                "ID": "console-uploads",
                "AllowedOrigins": ["http://127.0.0.1:8080"],
                "AllowedMethods": ["POST"],
                "MaxAgeSeconds": 600,
            }
        ]
    }
