"""The sql function's run() on real CSV, Parquet and JSON-lines files: results, metadata, limits, and every
hostile query refused by the engine's configuration (external access off, configuration locked)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import ValidationError

from pijobs.shared.errors import JobCancelledError
from pijobs.shared.functions import JobRefusedError, RunContext
from pijobs.worker.sql.engine import detect_format, engine_settings, spill_limit
from pijobs.worker.sql.function import INSTANCE, SqlFunction, SqlLimits, SqlParams

IDS = {"t": "a" * 32, "p": "b" * 32, "j": "c" * 32}


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "inputs"
    folder.mkdir()
    t = folder / "t"
    t.write_text(
        "city,amount,ts\nOslo,3,2024-01-01 10:00:00\nLima,5,2024-01-02 11:00:00\nOslo,4,2024-01-03 12:00:00\n"
    )
    p = folder / "p"
    duckdb.sql(
        "COPY (SELECT * FROM (VALUES ('Oslo', 'NO'), ('Lima', 'PE')) AS v(city, country)) "
        f"TO '{p}' (FORMAT parquet)"
    )
    j = folder / "j"
    j.write_text('{"city": "Oslo", "mayor": "A"}\n{"city": "Lima", "mayor": "B"}\n')
    return {"t": t, "p": p, "j": j}


def run(
    tmp_path: Path,
    inputs: dict[str, Path],
    query: str,
    fmt: str = "csv",
    limits: SqlLimits | None = None,
    progress: Any = None,
    timeout_seconds: int = 300,
    memory_limit_bytes: int = 1 << 30,
    checked_at_submit: bool = True,
) -> Any:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    model = SqlParams if checked_at_submit else SqlParams.model_construct  # the worker checks again
    params = model(
        query=query,
        inputs={name: IDS[name] for name in inputs},
        format=fmt,  # type: ignore[arg-type]
        timeout_seconds=timeout_seconds,
    )
    ctx = RunContext(
        job_id="0" * 32,
        params=params,
        scratch=scratch,
        progress=progress or (lambda fraction: None),
        cancelled=lambda: False,
        inputs=inputs,
        memory_limit_bytes=memory_limit_bytes,
        limits=limits or SqlLimits(),
    )
    return SqlFunction().run(ctx)


def test_formats_are_told_apart_by_content(inputs: dict[str, Path]) -> None:
    assert {name: detect_format(path) for name, path in inputs.items()} == {
        "t": "csv",
        "p": "parquet",
        "j": "jsonl",
    }


def test_a_join_over_csv_parquet_and_json_lines_gives_the_rows_and_their_columns(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    output = run(
        tmp_path,
        inputs,
        "SELECT t.city, p.country, j.mayor, sum(t.amount) AS total FROM t JOIN p USING (city) "
        "JOIN j USING (city) GROUP BY ALL ORDER BY total DESC;",
    )

    assert output.filename == "result.csv" and output.content_type == "text/csv"
    with output.path.open() as stream:
        assert list(csv.reader(stream)) == [
            ["city", "country", "mayor", "total"],
            ["Oslo", "NO", "A", "7"],
            ["Lima", "PE", "B", "5"],
        ]
    assert output.metadata == {
        "rows": 2,
        "format": "csv",
        "columns": [
            {"name": "city", "type": "VARCHAR"},
            {"name": "country", "type": "VARCHAR"},
            {"name": "mayor", "type": "VARCHAR"},
            {"name": "total", "type": "HUGEINT"},
        ],
    }


def test_the_csv_input_is_typed_by_detection(tmp_path: Path, inputs: dict[str, Path]) -> None:
    output = run(tmp_path, {"t": inputs["t"]}, "SELECT max(ts) AS latest, count(*) AS n FROM t")

    assert output.metadata["columns"] == [
        {"name": "latest", "type": "TIMESTAMP"},
        {"name": "n", "type": "BIGINT"},
    ]


def test_parquet_and_json_lines_results(tmp_path: Path, inputs: dict[str, Path]) -> None:
    parquet = run(tmp_path, inputs, "SELECT city, amount FROM t ORDER BY amount", fmt="parquet")
    assert parquet.filename == "result.parquet"
    assert duckdb.sql(f"SELECT * FROM read_parquet('{parquet.path}')").fetchall() == [
        ("Oslo", 3),
        ("Oslo", 4),
        ("Lima", 5),
    ]

    lines = run(tmp_path, inputs, "WITH x AS (SELECT city FROM j) SELECT * FROM x ORDER BY city", fmt="json")
    assert lines.filename == "result.jsonl" and lines.content_type == "application/x-ndjson"
    assert [json.loads(line) for line in lines.path.read_text().splitlines()] == [
        {"city": "Lima"},
        {"city": "Oslo"},
    ]
    assert lines.metadata["rows"] == 2


def test_more_rows_than_the_limit_is_result_too_large(tmp_path: Path, inputs: dict[str, Path]) -> None:
    assert run(tmp_path, inputs, "SELECT * FROM t", limits=SqlLimits(max_rows=3)).metadata["rows"] == 3

    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, inputs, "SELECT * FROM range(10)", limits=SqlLimits(max_rows=3))
    assert refused.value.code == "result_too_large" and "3 rows" in refused.value.message


def test_more_bytes_than_the_limit_is_result_too_large(tmp_path: Path, inputs: dict[str, Path]) -> None:
    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, inputs, "SELECT repeat('x', 1000) FROM t", limits=SqlLimits(max_result_bytes=2000))
    assert refused.value.code == "result_too_large"


HOSTILE = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/proc/self/environ')",
    "SELECT * FROM read_blob('/proc/self/environ')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "SELECT * FROM read_csv('s3://pijobs-results/uploads/someone/else')",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_a_query_cannot_read_files_or_urls(tmp_path: Path, inputs: dict[str, Path], query: str) -> None:
    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, inputs, query)

    assert refused.value.code == "query_rejected"
    assert "/" not in refused.value.message  # no path, no engine text


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1) TO '{out}'",
        "ATTACH '{out}'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "PRAGMA version",
        "CALL pragma_version()",
        "SELECT 1; SELECT 2",
        "SELECT 1; COPY (SELECT 1) TO '{out}'",
        "CREATE TABLE x AS SELECT 1",
        "EXPLAIN SELECT 1",
    ],
)
def test_only_one_select_statement_runs(tmp_path: Path, inputs: dict[str, Path], query: str) -> None:
    out = tmp_path / "out.csv"
    with pytest.raises(JobRefusedError) as refused:
        SqlFunction().run(_context_without_model_check(tmp_path, inputs, query.format(out=out)))

    assert refused.value.code == "query_rejected"
    assert not out.exists()


def _context_without_model_check(tmp_path: Path, inputs: dict[str, Path], query: str) -> RunContext:
    """The worker's own guard, as if a record's query had skipped the API's validation."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    params = SqlParams.model_construct(query=query, inputs=IDS, format="csv")
    return RunContext(
        job_id="0" * 32,
        params=params,
        scratch=scratch,
        progress=lambda fraction: None,
        cancelled=lambda: False,
        inputs=inputs,
        limits=SqlLimits(),
    )


def test_a_file_named_as_a_table_is_not_read(tmp_path: Path, inputs: dict[str, Path]) -> None:
    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, inputs, "SELECT * FROM '/etc/passwd'")

    assert refused.value.code == "query_invalid"
    assert refused.value.message == "the query does not fit its inputs (tables: j, p, t)"


@pytest.mark.parametrize(
    "query",
    [
        "SELECT getenv('HOME')",
        "SELECT current_setting('temp_directory')",
        "SELECT * FROM duckdb_settings()",
        'SELECT * FROM "duckdb_settings"()',
        "SELECT * FROM main.DUCKDB_TEMPORARY_FILES()",
        "SELECT sql FROM sqlite_master",
        "SELECT view_definition FROM information_schema.views",
        "SELECT definition FROM pg_catalog.pg_views",
        "SELECT * FROM query('SELECT * FROM duckdb_settings()')",
        "SELECT getvariable('x')",
    ],
)
def test_settings_paths_and_the_catalog_are_not_reachable(
    tmp_path: Path, inputs: dict[str, Path], query: str
) -> None:
    """Each of these shows the worker's scratch paths (the inputs' views, the spill directory) or limits."""
    with pytest.raises(ValidationError):
        SqlParams(query=query, inputs={"t": IDS["t"]})  # refused at submit
    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, inputs, query, checked_at_submit=False)  # and by the worker, whatever the API let by
    assert refused.value.code == "query_rejected"
    assert str(tmp_path) not in refused.value.message


def test_a_query_past_its_timeout_is_interrupted_and_fails_query_timeout(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    started = time.monotonic()
    with pytest.raises(JobRefusedError) as refused:
        run(
            tmp_path,
            inputs,
            "SELECT count(*) FROM range(100000000) a, range(100000000) b",
            timeout_seconds=1,
        )

    assert refused.value.code == "query_timeout" and "1 s" in refused.value.message
    assert time.monotonic() - started < 10  # interrupted, not left to the job's deadline


def test_a_query_past_the_memory_limit_fails_out_of_memory(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """Half of the instance's memory (here 512 MiB of 1 GiB): a string_agg that cannot spill fails cleanly."""
    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, inputs, "SELECT string_agg(md5(i::varchar), ',') FROM range(30000000) t(i)")

    assert refused.value.code == "out_of_memory"


def test_a_spill_past_the_free_disk_fails_disk_full(
    tmp_path: Path, inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spill limit derives from the scratch disk's free space: a disk with little room fails the query
    with disk_full before it is full."""
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))  # type: ignore[attr-defined]
    with pytest.raises(JobRefusedError) as refused:
        run(
            tmp_path,
            inputs,
            "SELECT count(*) FROM (SELECT i, md5(i::varchar) m FROM range(20000000) t(i) ORDER BY m)",
            memory_limit_bytes=512 << 20,
        )

    assert refused.value.code == "disk_full"


def test_a_query_error_names_the_problem_without_paths(tmp_path: Path, inputs: dict[str, Path]) -> None:
    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, inputs, "SELECT nope FROM t")

    assert refused.value.code == "query_invalid"
    assert "tables: j, p, t" in refused.value.message and "nope" in refused.value.message
    assert str(tmp_path) not in refused.value.message


def test_an_input_that_is_not_its_format_is_input_unreadable(tmp_path: Path, inputs: dict[str, Path]) -> None:
    broken = tmp_path / "inputs" / "j"
    broken.write_text('{"city": "Oslo"\n{{{\n')

    with pytest.raises(JobRefusedError) as refused:
        run(tmp_path, {"j": broken}, "SELECT * FROM j")
    assert refused.value.code == "input_unreadable" and "JSON lines" in refused.value.message


def test_a_cancel_during_the_query_interrupts_it(tmp_path: Path, inputs: dict[str, Path]) -> None:
    def cancelled(fraction: float) -> None:
        raise JobCancelledError("the job was cancelled")

    with pytest.raises(JobCancelledError):
        run(
            tmp_path,
            inputs,
            "SELECT count(*) FROM range(20000000000) a",
            progress=cancelled,
        )


def test_memory_and_threads_come_from_the_instance_not_the_host() -> None:
    settings = engine_settings(8 << 30, 1, INSTANCE)

    assert settings["threads"] == 1 and settings["memory_limit"] == "4096MiB"  # half of what is available
    assert (
        settings["autoload_known_extensions"] is False and settings["autoinstall_known_extensions"] is False
    )
    # A host larger than the instance type (the embedded stack): the r7i.large's 2 vCPUs and 16 GiB rule.
    assert engine_settings(256 << 30, 64, INSTANCE) | {} == {
        **settings,
        "threads": 2,
        "memory_limit": "8192MiB",
    }
    assert engine_settings(None, None, INSTANCE)["memory_limit"] == "8192MiB"


def test_the_spill_limit_leaves_room_for_the_result() -> None:
    assert spill_limit(100 << 30, 1 << 30) == int((99 << 30) * 0.8)
    assert spill_limit(1 << 30, 1 << 30) == int((512 << 20) * 0.8)  # the result gets at most half
    assert spill_limit(0, 1 << 30) == 64 << 20


def test_integer_aggregates_stay_integers_in_parquet(tmp_path: Path, inputs: dict[str, Path]) -> None:
    query = 'SELECT city, sum(amount) AS total, count(*) AS "n ""rows""" FROM t GROUP BY city ORDER BY city'

    output = run(tmp_path, {"t": inputs["t"]}, query, "parquet")

    read = duckdb.sql(f"SELECT * FROM '{output.path}'")
    assert [str(t) for t in read.types] == ["VARCHAR", "BIGINT", "BIGINT"]
    assert read.fetchall() == [("Lima", 5, 1), ("Oslo", 7, 2)]
    assert [c["type"] for c in output.metadata["columns"]] == ["VARCHAR", "BIGINT", "BIGINT"]


def test_a_sum_past_bigint_stays_exact_in_parquet(tmp_path: Path, inputs: dict[str, Path]) -> None:
    big = tmp_path / "big.csv"
    big.write_text("x\n9223372036854775807\n9223372036854775807\n")

    output = run(tmp_path, {"t": big}, "SELECT sum(x) AS total FROM t", "parquet")

    (value,) = duckdb.sql(f"SELECT total FROM '{output.path}'").fetchone()
    assert int(value) == 2 * (2**63 - 1)  # a DOUBLE would have lost the last digits
