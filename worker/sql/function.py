"""The business function "sql": one SELECT over the job's own uploaded files, the result as a file.

Each input becomes a read-only view of its name (CSV, Parquet or JSON lines, told apart by the file's
content). This module is what the API imports to validate requests: pydantic and ``shared`` only (and the
engine-free query check); DuckDB is imported inside ``run``, on the instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from pijobs.shared.functions import (
    BOOT_SECONDS,
    DEADLINE_RANGE,
    BusinessFunction,
    OutputFile,
    RunContext,
)
from pijobs.shared.inputs import Inputs
from pijobs.worker.sql.query import MAX_QUERY_CHARS, QueryShapeError, check_query_shape


@dataclass(frozen=True)
class InstanceSize:
    """What a job's instance type has: the engine takes no more, whatever the machine (a larger host runs
    the embedded stack's workers)."""

    instance_type: str
    memory_bytes: int
    vcpus: int


# Memory first: 16 GiB for 2 vCPUs, and DuckDB spills to disk past its share of it.
INSTANCE = InstanceSize("r7i.large", memory_bytes=16 << 30, vcpus=2)
# The inputs' download besides the query (8 inputs of the 5 GiB an upload may be, at ~200 MB/s).
TRANSFER_SECONDS = 300
DEFAULT_TIMEOUT_SECONDS = 300
# The longest timeout that still fits the templates' longest deadline.
MAX_TIMEOUT_SECONDS = DEADLINE_RANGE[1] - BOOT_SECONDS - TRANSFER_SECONDS


class SqlParams(BaseModel):
    """The parameters of an sql job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str = Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="one SELECT (or WITH ... SELECT) statement over the inputs, each a table of its name",
    )
    inputs: Inputs
    format: Literal["csv", "parquet", "json"] = Field(
        default="csv", description="the result file: CSV with a header, Parquet, or JSON lines"
    )
    timeout_seconds: StrictInt = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="seconds until the query is stopped (query_timeout); at most the operator's limit",
    )

    @field_validator("query")
    @classmethod
    def _one_select(cls, query: str) -> str:
        try:
            check_query_shape(query)
        except QueryShapeError as exc:
            raise ValueError(str(exc)) from None
        return query


class SqlLimits(BaseModel):
    """What the operator allows (template parameter FunctionLimits, e.g. {"sql": {"max_rows": 1000000}})."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: StrictInt = Field(default=10_000_000, ge=1)
    max_result_bytes: StrictInt = Field(default=1 << 30, ge=1)
    max_timeout_seconds: StrictInt = Field(default=3600, ge=1, le=MAX_TIMEOUT_SECONDS)


class SqlFunction(BusinessFunction):
    name = "sql"
    version = "1"
    title = "SQL over your files"
    description = (
        "Runs one SELECT statement in DuckDB over your uploaded files (each input a table of its name; CSV, "
        "Parquet or JSON lines) and returns the result as CSV, Parquet or JSON lines. The query can read "
        "nothing but its inputs: no other files, URLs, settings or extensions."
    )
    request_model = SqlParams
    limits_model = SqlLimits
    root_volume_gib = 64  # DuckDB spills to disk beside the inputs and the result
    error_codes = frozenset(
        {
            "query_rejected",
            "query_invalid",
            "query_failed",
            "query_timeout",
            "out_of_memory",
            "disk_full",
            "input_unreadable",
            "result_too_large",
        }
    )
    instance_types = (INSTANCE.instance_type,)
    requirements = ("duckdb>=1.1,<2",)
    accepts_inputs = True

    def check(self, params: SqlParams, limits: SqlLimits) -> list[tuple[str, str]]:
        if params.timeout_seconds > limits.max_timeout_seconds:
            return [("timeout_seconds", f"must be between 1 and {limits.max_timeout_seconds}")]
        return []

    def instance_type(self, params: SqlParams) -> str:
        return INSTANCE.instance_type

    def deadline_seconds(self, params: SqlParams) -> int:
        """Boot, the inputs' download and the query's own timeout: the deadline stops only what the
        timeout's interrupt could not."""
        return BOOT_SECONDS + TRANSFER_SECONDS + params.timeout_seconds

    def run(self, ctx: RunContext) -> OutputFile:
        from pijobs.worker.sql.engine import run_query  # lazy: DuckDB, on the instance only

        limits = ctx.limits if isinstance(ctx.limits, SqlLimits) else SqlLimits()
        return run_query(ctx, limits, INSTANCE)
