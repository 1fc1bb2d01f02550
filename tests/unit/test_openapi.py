"""The OpenAPI document: valid, generated from the route table and the models, and current in docs/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pijobs.api_handler import contract
from pijobs.api_handler.openapi import render, shipped_registry
from pijobs.api_handler.routes import OPERATIONS, openapi_document
from pijobs.api_handler.web import ERROR_STATUS
from pijobs.shared.functions import load_registry

openapi_spec_validator = pytest.importorskip("openapi_spec_validator")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document(shipped_registry())


def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    openapi_spec_validator.validate(doc)


def test_docs_openapi_json_is_current() -> None:
    """docs/openapi.json is what `pijobs openapi --write docs/openapi.json` writes from this code."""
    assert DOCS.read_text(encoding="utf-8") == render(openapi_document(shipped_registry())), (
        "docs/openapi.json is stale: run pijobs openapi --write docs/openapi.json"
    )


def test_every_operation_of_the_table_is_documented_once(doc: dict[str, Any]) -> None:
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]

    assert documented == {(op.method, op.path) for op in OPERATIONS}
    assert sorted(ids) == sorted(op.operation_id for op in OPERATIONS)


def test_only_the_document_and_the_console_page_are_open_without_a_key(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    open_routes = [
        path for path, item in doc["paths"].items() for op in item.values() if op.get("security") == []
    ]
    assert open_routes == ["/openapi.json", "/console"]


def test_the_console_is_documented_as_a_web_page_with_its_security_headers(doc: dict[str, Any]) -> None:
    answer = doc["paths"]["/console"]["get"]["responses"]["200"]

    assert answer["content"] == {"text/html": {"schema": {"type": "string"}}}
    assert {"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"} <= set(answer["headers"])
    assert "parameters" not in doc["paths"]["/console"]["get"]


def test_list_jobs_documents_its_filters(doc: dict[str, Any]) -> None:
    parameters = {p["name"]: p["schema"] for p in doc["paths"]["/jobs"]["get"]["parameters"]}

    assert set(parameters) == {"limit", "next", "function", "status", "name_contains"}
    assert parameters["status"]["$ref"].endswith("/JobStatus")


def test_every_error_answer_is_the_envelope_and_every_api_error_status_is_documented(
    doc: dict[str, Any],
) -> None:
    statuses: set[int] = set()
    for item in doc["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    statuses.add(int(status))
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}
    # 405 only answers a method no route has, which no operation of the document is; 401 only the worker
    # channel, which the customer's document leaves out
    assert set(ERROR_STATUS.values()) - {405, 401} <= statuses
    assert 401 not in statuses


def test_submit_offers_one_schema_per_enabled_function_and_the_pi_shorthand(doc: dict[str, Any]) -> None:
    body = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    choices = body["schema"]["oneOf"]
    registry = shipped_registry()

    named = [c["properties"]["function"]["const"] for c in choices if "function" in c.get("properties", {})]
    assert named == [function.name for function in registry]
    pi_params = doc["components"]["schemas"]["pi.PiParams"]
    assert pi_params["properties"]["digits"]["maximum"] >= 1_000_000
    assert body["example"] == {"function": "pi", "params": {"digits": 1000}}
    shorthand = choices[-1]
    assert set(shorthand["properties"]) == {"digits", "cost_center", "name", "callback_url"}


@pytest.mark.usefixtures("wordcount_plugin")
def test_a_plug_in_brings_its_own_parameter_schema() -> None:
    """The document served by a deployment lists the functions it enables (here a test plug-in)."""
    registry = load_registry(["pi", "word-count"])

    doc = openapi_document(registry)

    choices = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [c["title"] for c in choices] == ["pi", "word-count", "pi (shorthand)"]
    assert any(name.startswith("word-count.") for name in doc["components"]["schemas"])


def test_submitting_links_to_the_job_its_cancel_and_its_result(doc: dict[str, Any]) -> None:
    links = doc["paths"]["/jobs"]["post"]["responses"]["202"]["links"]
    assert {link["operationId"] for link in links.values()} == {"getJob", "cancelJob", "getJobResult"}
    assert all(link["parameters"] == {"id": "$response.body#/job_id"} for link in links.values())


@pytest.mark.parametrize("model", [contract.JobView, contract.JobPage, contract.ErrorEnvelope])
def test_response_models_refuse_fields_they_do_not_declare(model: type[contract.Model]) -> None:
    """What is sent is what is documented: a view with an undeclared field fails when it is built."""
    assert model.model_config.get("extra") == "forbid"
    assert json.dumps(model.model_json_schema()).count('"additionalProperties": false') >= 1
