"""The Python client and the API's document agree: one method per operation, with the operation's inputs
as its arguments (a route added, or a query parameter, without its client method fails here)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from pijobs.api_handler.openapi import shipped_registry
from pijobs.api_handler.routes import openapi_document
from pijobs.client import OPERATION_METHODS, PijobsClient

# The document's parameter names where Python spells them differently (an id by what it names).
ARGUMENT_OF = {"id": "job_id", "next": "next_token", "Idempotency-Key": "idempotency_key"}
ARGUMENT_OF_TAG = {"uploads": {"id": "upload_id"}, "webhooks": {"id": "webhook_id"}}


@pytest.fixture(scope="module")
def operations() -> dict[str, dict[str, Any]]:
    doc = openapi_document(shipped_registry())
    return {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}


def test_every_operation_has_a_client_method(operations: dict[str, dict[str, Any]]) -> None:
    assert set(OPERATION_METHODS) == set(operations)
    for method in OPERATION_METHODS.values():
        assert callable(getattr(PijobsClient, method)) and getattr(PijobsClient, method).__doc__, method


@pytest.mark.parametrize("operation_id", sorted(OPERATION_METHODS))
def test_a_method_takes_its_operations_parameters(
    operations: dict[str, dict[str, Any]], operation_id: str
) -> None:
    signature = inspect.signature(getattr(PijobsClient, OPERATION_METHODS[operation_id]))
    arguments = set(signature.parameters) - {"self"}
    operation = operations[operation_id]
    names = {**ARGUMENT_OF, **ARGUMENT_OF_TAG.get(operation["tags"][0], {})}
    documented = {names.get(p["name"], p["name"]) for p in operation.get("parameters", [])}

    assert documented <= arguments, f"{operation_id}: the client lacks {documented - arguments}"


def test_submit_takes_the_submission_fields() -> None:
    doc = openapi_document(shipped_registry())
    choices = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    fields = set().union(*(c["properties"] for c in choices if "function" in c["properties"]))

    assert fields <= set(inspect.signature(PijobsClient.submit).parameters)


def test_per_run_execute_takes_the_original_fields() -> None:
    doc = openapi_document(shipped_registry())
    schema = doc["components"]["schemas"]["PerRunExecuteRequest"]
    snake = {"DigitsToCalculate": "digits", "StackName": "stack_name", "CostCenter": "cost_center"}

    assert {snake[name] for name in schema["properties"]} <= set(
        inspect.signature(PijobsClient.per_run_execute).parameters
    )


def test_create_upload_takes_the_declarations_fields() -> None:
    doc = openapi_document(shipped_registry())
    schema = doc["components"]["schemas"]["CreateUploadRequest"]

    assert set(schema["properties"]) <= set(inspect.signature(PijobsClient.create_upload).parameters)
