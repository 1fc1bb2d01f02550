"""The sql function's request model: what the API refuses at submit, each problem naming its field."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pijobs.shared.functions import BOOT_SECONDS, DEADLINE_RANGE, check_function, job_deadline
from pijobs.worker.sql.function import SqlFunction, SqlLimits, SqlParams
from pijobs.worker.sql.query import QueryShapeError, check_query_shape

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
    assert SqlLimits() == SqlLimits(max_rows=10_000_000, max_result_bytes=1 << 30, max_timeout_seconds=3600)
    schema = function.parameter_schema()
    assert schema["required"] == ["query", "inputs"] and schema["additionalProperties"] is False
    assert schema["properties"]["format"]["enum"] == ["csv", "parquet", "json"]


# The five queries the first version of the check let by, each of which DuckDB reads as something else
# than one SELECT (so the worker refused them, after the job had waited and its instance had booted).
GAPS = [
    "SELECT 1 -- a comment that a carriage return ends\r; SELECT 2",
    "SELECT E'\\''; SELECT 2 --'",
    "SELECT e'\\\\'; SELECT 2",
    "WITH a AS (SELECT 1) DELETE FROM t",
    "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
]
# A PIVOT statement without the values of its columns: DuckDB reads a CREATE TYPE of the values found, then
# the SELECT (found after the check above: they passed at submit and failed on the worker).
PIVOTS_WITHOUT_VALUES = [
    "SELECT * FROM (PIVOT t ON x USING sum(y))",
    "SELECT * FROM (pivot_wider t on x using sum(y)) AS p",
    "SELECT * FROM (PIVOT t ON x IN (1, 2), z USING sum(y))",
    "SELECT * FROM (PIVOT t ON x IN (SELECT x FROM t) USING sum(y))",
    "SELECT * FROM (PIVOT (SELECT * FROM t) ON x || z)",
    "SELECT * FROM t JOIN (PIVOT t ON x USING sum(y)) p ON true",
    "SELECT (PIVOT t ON x USING sum(y))",
    "WITH p AS (PIVOT t ON x USING sum(y)) SELECT * FROM p",
    "SELECT * FROM (PIVOT t JOIN u USING (a) ON x USING sum(y))",
]
GAPS += PIVOTS_WITHOUT_VALUES


@pytest.mark.parametrize("query", GAPS)
def test_what_duckdb_reads_as_more_or_other_than_one_select_is_refused_at_submit(query: str) -> None:
    statements = duckdb.extract_statements(query)
    assert len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT  # the premise

    with pytest.raises(QueryShapeError):
        check_query_shape(query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT E'\\''",
        "SELECT E'x'\n-- a comment\n'y'",
        "WITH a AS (SELECT 1) FROM a",
        "WITH a AS (SELECT 1) VALUES (1)",
        "WITH a AS (SELECT 1) (SELECT * FROM a)",
        "WITH RECURSIVE a(x) AS MATERIALIZED (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b",
        "SELECT 1 /* a /* nested */ comment; */",
        'SELECT query, "current_setting" FROM t',
        "SELECT 'duckdb_settings()' AS text",
        "SELECT * FROM (PIVOT t ON x IN (1, 2), z IN ('a') USING sum(y) GROUP BY w ORDER BY w LIMIT 5)",
        "SELECT * FROM (PIVOT_WIDER (SELECT * FROM t) ON x IN (1))",
        "SELECT * FROM (PIVOT t JOIN u ON t.a = u.a ON x IN (1) USING sum(y))",
        "SELECT * FROM (PIVOT t USING sum(y) GROUP BY z)",
        "SELECT * FROM t PIVOT (sum(y) FOR x IN (1, 2))",
        "SELECT * FROM (UNPIVOT t ON a, b INTO NAME k VALUE v)",
        "SELECT * FROM (PIVOT_LONGER t ON a, b INTO NAME k VALUE v)",
        "SELECT * FROM t UNPIVOT (v FOR k IN (a, b))",
        "SELECT 'PIVOT t ON x' AS text",
    ],
)
def test_queries_that_read_like_one_select_are_accepted(query: str) -> None:
    (statement,) = duckdb.extract_statements(query)
    assert statement.type == duckdb.StatementType.SELECT

    assert check_query_shape(query)


FRAGMENTS = [
    "SELECT 1",
    "SELECT 2",
    ";",
    " ",
    "\n",
    "\r",
    "--c",
    "/*",
    "*/",
    "'",
    "E'",
    "e'",
    "\\",
    "''",
    '"',
]
FRAGMENTS += ["$$", "WITH a AS (SELECT 1) ", "DELETE FROM t", "INSERT INTO t SELECT 1", "(", ")", ",", "x"]
FRAGMENTS += ["PIVOT t", "PIVOT_WIDER t", "UNPIVOT t", " ON x", " IN (1)", " IN (SELECT 1)", " USING sum(y)"]
FRAGMENTS += [" JOIN u", " ON true", " USING (a)", " GROUP BY z", " INTO NAME k VALUE v", " FOR x"]


@settings(max_examples=2000, deadline=None)
@given(
    head=st.sampled_from(["SELECT ", "WITH a AS (", "WITH a AS (SELECT 1) ", "(", "SELECT * FROM ("]),
    parts=st.lists(st.sampled_from(FRAGMENTS), max_size=12),
)
def test_what_the_check_accepts_duckdb_reads_as_one_select(head: str, parts: list[str]) -> None:
    """The check at submit refuses everything that DuckDB's parser reads as more than one statement or as
    another statement than a SELECT (what it accepts may still be invalid SQL: the worker says so)."""
    query = head + "".join(parts)
    try:
        check_query_shape(query)
    except QueryShapeError:
        return
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error:
        return
    assert [s.type for s in statements] == [duckdb.StatementType.SELECT], query


def test_every_catalog_view_and_catalog_function_of_the_installed_duckdb_is_refused() -> None:
    """A DuckDB upgrade that adds a view or table function over the catalog or the settings fails here."""
    con = duckdb.connect(config={"python_enable_replacements": False})  # no Python variable is a table
    views = con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE internal").fetchall()
    functions = con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table'"
    ).fetchall()
    data = {"range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree", "summary"}
    data |= {"glob", "sniff_csv", "read_blob", "read_text", "read_duckdb", "parquet_scan", "seq_scan"}

    for schema, view in views:
        with pytest.raises(QueryShapeError):
            check_query_shape(f"SELECT * FROM {schema}.{view}")
        try:
            check_query_shape(f"SELECT * FROM {view}")
        except QueryShapeError:
            continue
        with pytest.raises(duckdb.CatalogException):  # accepted only where the name alone finds nothing
            con.execute(f"SELECT * FROM {view}")
    for (name,) in functions:
        if name in data or name.startswith(("read_", "parquet_", "test_", "arrow_", "pandas_", "python_")):
            continue  # data, not the engine's state (files are the engine configuration's to refuse)
        if name in ("checkpoint", "force_checkpoint", "icu_calendar_names", "pg_timezone_names"):
            continue  # harmless without a database file, or not the worker's state
        if name.endswith(("_logging", "_profiling")) or name == "truncate_duckdb_logs":
            continue  # refused: the configuration is locked
        with pytest.raises(QueryShapeError):
            check_query_shape(f"SELECT * FROM {name}()")


def test_the_timeout_is_bounded_by_the_operator_and_sets_the_deadline() -> None:
    function = SqlFunction()
    default = SqlParams.model_validate({"query": "SELECT 1", "inputs": {"t": UPLOAD}})
    long = SqlParams.model_validate({"query": "SELECT 1", "inputs": {"t": UPLOAD}, "timeout_seconds": 7200})

    assert default.timeout_seconds == 300
    assert function.check(default, SqlLimits()) == []
    assert function.check(long, SqlLimits()) == [("timeout_seconds", "must be between 1 and 3600")]
    assert function.check(long, SqlLimits(max_timeout_seconds=7200)) == []
    assert job_deadline(function, default) == BOOT_SECONDS + 300 + 300  # boot, the inputs, the query
    assert job_deadline(function, long) == BOOT_SECONDS + 300 + 7200
    assert "timeout_seconds" in problems({"query": "SELECT 1", "inputs": {"t": UPLOAD}, "timeout_seconds": 0})
    too_long = {"query": "SELECT 1", "inputs": {"t": UPLOAD}, "timeout_seconds": DEADLINE_RANGE[1]}
    assert "timeout_seconds" in problems(too_long)  # no timeout the longest deadline could not hold
