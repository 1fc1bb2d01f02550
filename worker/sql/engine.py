"""The sql function on its instance: DuckDB, configured so that a query reaches nothing but its inputs.

The order matters. The connection starts with extension autoloading and installing off; the inputs become
views (each file's format told by its content); then ``allowed_paths`` names exactly the input files and
the result file, external access is switched off and the configuration locked, so no later statement can
read another file or URL, attach a database, load an extension or change a setting. Only then is the
customer's query parsed (DuckDB's parser: exactly one SELECT) and run into the result file, one row past
``max_rows`` at most.

Every query is bounded: its time by ``timeout_seconds`` (an interrupt from the progress thread, then the
job's deadline), its memory by half of the instance's (DuckDB's own default is 80 % of the machine's), its
threads by the instance's vCPUs, and what it spills by ``max_temp_directory_size``, below the scratch
disk's free space, so a spill fails the query (``disk_full``) before it fills the disk.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pijobs.shared import errors
from pijobs.shared.functions import JobRefusedError, OutputFile, RunContext
from pijobs.shared.logs import get_logger
from pijobs.worker.sql.query import QueryShapeError, check_query_shape

if TYPE_CHECKING:  # the plug-in imports this module inside run(): its model is a type here, no import
    from pijobs.worker.sql.function import InstanceSize, SqlLimits

log = get_logger(__name__)

FORMATS: dict[str, tuple[str, str, str]] = {  # format -> (COPY options, file name, content type)
    "csv": ("FORMAT csv, HEADER true", "result.csv", "text/csv"),
    "parquet": ("FORMAT parquet", "result.parquet", "application/vnd.apache.parquet"),
    "json": ("FORMAT json", "result.jsonl", "application/x-ndjson"),
}
READERS = {
    "parquet": "read_parquet({path})",
    "jsonl": "read_json({path}, format = 'newline_delimited')",
    "csv": "read_csv({path})",
}
FORMAT_NAMES = {"parquet": "Parquet", "jsonl": "JSON lines", "csv": "CSV"}
MEMORY_SHARE = 0.5  # of the instance's memory: the rest for the worker, the OS, the page cache, the upload
MIN_MEMORY_BYTES = 256 << 20
SPILL_SHARE = 0.8  # of the disk that is free once the result's room is set aside
MIN_SPILL_BYTES = 64 << 20
PROGRESS_SECONDS = 0.5
RESULT_VIEW = "__pijobs_result"

REJECTED = (
    "the query may read only its inputs: files, URLs, extensions, databases and settings are off limits"
)


def detect_format(path: Path) -> str:
    """``parquet`` (its magic number), ``jsonl`` (a first value that is an object) or ``csv``."""
    with path.open("rb") as stream:
        head = stream.read(4096)
    if head[:4] == b"PAR1":
        return "parquet"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "jsonl"
    return "csv"


def engine_settings(
    memory_limit_bytes: int | None, cpus: int | None, instance: InstanceSize
) -> dict[str, Any]:
    """The connection's configuration from what the instance has: ``memory_limit_bytes`` is what it can
    give (MemAvailable), ``cpus`` what this machine counts; neither more than the function's instance type
    has (the embedded stack runs workers on a larger host)."""
    settings: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "threads": max(1, min(cpus or 1, instance.vcpus)),
    }
    memory = min(memory_limit_bytes or instance.memory_bytes, instance.memory_bytes)
    settings["memory_limit"] = f"{max(MIN_MEMORY_BYTES, int(memory * MEMORY_SHARE)) >> 20}MiB"
    return settings


def spill_limit(free_bytes: int, result_bytes: int) -> int:
    """How much DuckDB may spill: a share of the free disk once the result's room is set aside."""
    room = max(0, free_bytes - min(result_bytes, free_bytes // 2))
    return max(MIN_SPILL_BYTES, int(room * SPILL_SHARE))


def run_query(ctx: RunContext, limits: SqlLimits, instance: InstanceSize) -> OutputFile:
    params = ctx.params
    copy_options, filename, content_type = FORMATS[params.format]
    out = ctx.scratch / filename
    out.unlink(
        missing_ok=True
    )  # over an existing file, COPY writes a tmp_ file beside it, which is not allowed
    spill = ctx.scratch / "spill"
    spill.mkdir(exist_ok=True)
    con = duckdb.connect(":memory:", config=engine_settings(ctx.memory_limit_bytes, os.cpu_count(), instance))
    deadline = time.monotonic() + params.timeout_seconds
    try:
        con.execute(f"SET temp_directory = {_literal(str(spill))}")
        spill_bytes = spill_limit(shutil.disk_usage(spill).free, limits.max_result_bytes)
        con.execute(f"SET max_temp_directory_size = '{spill_bytes >> 20}MiB'")
        for name, path in sorted(ctx.inputs.items()):
            _create_view(con, name, path)
        allowed = [str(p) for p in ctx.inputs.values()] + [str(out)]
        con.execute(f"SET allowed_paths = [{', '.join(_literal(p) for p in allowed)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        statement = _the_select(params.query)
        relation = _relation(con, statement, ctx)
        for wide_as in WIDE_INTEGER_AS if params.format == "parquet" else (None,):
            result = _narrowed(relation, wide_as)
            result.limit(limits.max_rows + 1).create_view(RESULT_VIEW)
            try:
                rows = _copy_with_progress(
                    con, f"COPY (FROM {RESULT_VIEW}) TO {_literal(str(out))} ({copy_options})", ctx, deadline
                )
                break
            except JobRefusedError as exc:  # a sum past BIGINT: once more, as DECIMAL(38,0)
                if result is relation or not isinstance(exc.__cause__, duckdb.ConversionException):
                    raise
                out.unlink(missing_ok=True)
        columns = [{"name": n, "type": str(t)} for n, t in zip(result.columns, result.types, strict=True)]
    finally:
        con.close()
    if rows > limits.max_rows:
        raise JobRefusedError(
            f"the result has more than {limits.max_rows} rows (the operator's limit): aggregate, or LIMIT it",
            code="result_too_large",
        )
    size = out.stat().st_size
    if size > limits.max_result_bytes:
        raise JobRefusedError(
            f"the result is {size} bytes, more than the operator's limit of {limits.max_result_bytes}",
            code="result_too_large",
        )
    log.info("sql_query_done", rows=rows, bytes=size, columns=len(columns))
    return OutputFile(
        out, filename, content_type, {"rows": rows, "columns": columns, "format": params.format}
    )


#: DuckDB's sum() over integers is a HUGEINT (128 bits), which Parquet has no type for: DuckDB writes it as
#: DOUBLE, so 7 comes back 7.0 and large sums lose digits. Parquet results keep them whole: BIGINT where the
#: values fit, else DECIMAL(38,0).
WIDE_INTEGERS = frozenset({"HUGEINT", "UHUGEINT"})
WIDE_INTEGER_AS = ("BIGINT", "DECIMAL(38,0)")


def _narrowed(relation: Any, as_type: str | None) -> Any:
    """``relation`` with its HUGEINT columns cast to ``as_type`` (itself when there are none)."""
    if as_type is None or not any(str(t) in WIDE_INTEGERS for t in relation.types):
        return relation
    items = []
    for name, kind in zip(relation.columns, relation.types, strict=True):
        quoted = '"' + name.replace('"', '""') + '"'
        items.append(f"CAST({quoted} AS {as_type}) AS {quoted}" if str(kind) in WIDE_INTEGERS else quoted)
    return relation.project(", ".join(items))


def _create_view(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
    kind = detect_format(path)
    reader = READERS[kind].format(path=_literal(str(path)))
    try:
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {reader}')
    except duckdb.Error as exc:
        log.warning("sql_input_unreadable", input=name, format=kind, error=str(exc))
        raise JobRefusedError(
            f"input {name} could not be read as {FORMAT_NAMES[kind]} (the format its content suggests)",
            code="input_unreadable",
        ) from exc


def _the_select(query: str) -> duckdb.Statement:
    """The query as DuckDB parses it: exactly one statement, a SELECT whose text starts SELECT or WITH."""
    try:
        check_query_shape(query)
        statements = duckdb.extract_statements(query)
    except QueryShapeError as exc:
        raise JobRefusedError(f"the query {exc}", code="query_rejected") from exc
    except duckdb.ParserException as exc:
        raise JobRefusedError(
            _customer_message("the query is not valid SQL", exc), code="query_invalid"
        ) from exc
    if len(statements) != 1:
        raise JobRefusedError("the query must be exactly one statement", code="query_rejected")
    (statement,) = statements
    if statement.type != duckdb.StatementType.SELECT:
        raise JobRefusedError("the query must be a SELECT statement", code="query_rejected")
    return statement


def _relation(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, ctx: RunContext) -> Any:
    try:
        return con.sql(statement.query)
    except duckdb.PermissionException as exc:
        raise JobRefusedError(REJECTED, code="query_rejected") from exc
    except (duckdb.BinderException, duckdb.CatalogException, duckdb.ParserException) as exc:
        names = ", ".join(sorted(ctx.inputs)) or "none"
        message = _customer_message(f"the query does not fit its inputs (tables: {names})", exc)
        raise JobRefusedError(message, code="query_invalid") from exc
    except duckdb.Error as exc:
        raise _query_failed(exc) from exc


def _copy_with_progress(con: duckdb.DuckDBPyConnection, copy: str, ctx: RunContext, deadline: float) -> int:
    """Run the COPY while a thread reports DuckDB's progress; a cancelled job, or the query's timeout at
    ``deadline`` (time.monotonic()), interrupts the query."""
    done = threading.Event()
    cancelled = threading.Event()
    timed_out = threading.Event()

    def report() -> None:
        while not done.wait(max(0.0, min(PROGRESS_SECONDS, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                timed_out.set()
                con.interrupt()
                return
            percent = con.query_progress()
            try:
                ctx.progress(max(0.0, min(percent, 100.0)) / 100 * 0.99)
            except errors.JobCancelledError:
                cancelled.set()
                con.interrupt()
                return

    reporter = threading.Thread(target=report, name="sql-progress", daemon=True)
    reporter.start()
    try:
        row = con.execute(copy).fetchone()
    except duckdb.PermissionException as exc:
        raise JobRefusedError(REJECTED, code="query_rejected") from exc
    except duckdb.Error as exc:
        if cancelled.is_set():
            raise errors.JobCancelledError("the job was cancelled") from exc
        if timed_out.is_set():
            seconds = ctx.params.timeout_seconds
            log.warning("sql_query_timed_out", timeout_seconds=seconds)
            raise JobRefusedError(
                f"the query ran longer than its timeout of {seconds} s and was stopped", code="query_timeout"
            ) from exc
        raise _query_failed(exc) from exc
    finally:
        done.set()
        reporter.join(timeout=5)
    return int(row[0]) if row else 0


def _query_failed(exc: duckdb.Error) -> JobRefusedError:
    log.warning("sql_query_failed", error_type=type(exc).__name__, error=str(exc))
    if _is_disk_full(exc):
        return JobRefusedError(
            "the query spilled more to disk than the job's instance has room for", code="disk_full"
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        return JobRefusedError(
            "the query needs more memory than the job's instance has", code="out_of_memory"
        )
    if isinstance(exc, (duckdb.ConversionException, duckdb.InvalidInputException)):
        return JobRefusedError(
            "the query failed on the data: a value could not be converted or an input could not be read",
            code="query_failed",
        )
    return JobRefusedError("the query failed while it ran", code="query_failed")


def _is_disk_full(exc: duckdb.Error) -> bool:
    """A spill past max_temp_directory_size (DuckDB raises it as out of memory), or a disk that filled."""
    text = str(exc)
    return "max_temp_directory_size" in text or "No space left on device" in text


def _customer_message(prefix: str, exc: duckdb.Error) -> str:
    """The prefix and the first line of DuckDB's own message about the query's text (a syntax error's
    position, a column that does not exist), with no local path in it."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    if "/" in detail or "\\" in detail or not detail:
        return prefix
    return f"{prefix}: {detail[:300]}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
