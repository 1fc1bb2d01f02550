"""The sql function's request model: what the API refuses at submit, each problem naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from pijobs.shared.functions import check_function
from pijobs.worker.sql.function import SqlFunction, SqlLimits, SqlParams
from pijobs.worker.sql.query import QueryShapeError, check_query_shape
from pydantic import ValidationError

UPLOAD = "0123456789abcdef0123456789abcdef"


def problems(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as refused:
        SqlParams.model_validate(body)
    return {".".join(map(str, e["loc"])): e["msg"] for e in refused.value.errors()}


def test_a_select_over_named_inputs_is_accepted_and_csv_is_the_default() -> None:
    params = SqlParams.model_validate({"query": "SELECT * FROM t", "inputs": {"t": UPLOAD}})

    assert params.format == "csv"
    assert SqlFunction().requested_inputs(params) == {"t": UPLOAD}


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1) TO 'x.csv'",
        "ATTACH 'x.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "PRAGMA version",
        "CALL pragma_version()",
        "CREATE TABLE x AS SELECT 1",
        "DROP VIEW t",
        "INSERT INTO t VALUES (1)",
        "EXPLAIN SELECT 1",
        "SELECT 1; SELECT 2",
        "SELECT 1; ATTACH 'x.db'",
        "-- only a comment",
        "/* not closed SELECT 1",
        "SELECT 'not closed",
    ],
)
def test_anything_but_one_select_is_a_field_error_on_query(query: str) -> None:
    found = problems({"query": query, "inputs": {"t": UPLOAD}})

    assert list(found) == ["query"]
    assert "statement" in found["query"] or "not closed" in found["query"]


@pytest.mark.parametrize(
    "query",
    [
        "select 1;",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "(SELECT 1) UNION (SELECT 2)",
        "SELECT ';' AS semicolon, \"a;b\" FROM t",
        "/* a note */ SELECT $$x; y$$ -- the end",
        "SELECT 1; -- nothing after",
    ],
)
def test_literals_and_comments_do_not_count_as_statements(query: str) -> None:
    assert SqlParams.model_validate({"query": query, "inputs": {"t": UPLOAD}}).query == query


def test_the_query_check_returns_the_statement_without_its_semicolon() -> None:
    assert check_query_shape("  SELECT 1 ;  ") == "SELECT 1"
    with pytest.raises(QueryShapeError):
        check_query_shape("SELECT 1; SELECT 2")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "SELECT 1"}, "inputs"),
        ({"query": "SELECT 1", "inputs": {}}, "inputs"),
        ({"query": "SELECT 1", "inputs": {"t": "not-an-upload-id"}}, "inputs.t"),
        ({"query": "SELECT 1", "inputs": {"Bad Name": UPLOAD}}, "inputs.Bad Name.[key]"),
        ({"query": "SELECT 1", "inputs": {"t": UPLOAD}, "format": "xlsx"}, "format"),
        ({"query": "", "inputs": {"t": UPLOAD}}, "query"),
        ({"query": "SELECT 1", "inputs": {"t": UPLOAD}, "engine": "other"}, "engine"),
        ({"query": "SELECT 1", "inputs": {f"t{i}": UPLOAD for i in range(9)}}, "inputs"),
    ],
)
def test_bad_inputs_format_and_extra_fields_are_named(body: dict[str, Any], field: str) -> None:
    assert list(problems(body)) == [field]


def test_the_function_passes_the_plug_in_checks_and_takes_inputs() -> None:
    function = SqlFunction()
    check_function(function, "sql")

    assert function.accepts_inputs and function.requirements == ("duckdb>=1.1,<2",)
    assert function.template_path() is None and function.root_volume_gib == 64  # the platform renders it
    assert SqlLimits() == SqlLimits(max_rows=10_000_000, max_result_bytes=1 << 30)
    schema = function.parameter_schema()
    assert schema["required"] == ["query", "inputs"] and schema["additionalProperties"] is False
    assert schema["properties"]["format"]["enum"] == ["csv", "parquet", "json"]
