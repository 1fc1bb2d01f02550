"""The business function "sql": one SELECT over the job's own uploaded files, the result as a file.

Each input becomes a read-only view of its name (CSV, Parquet or JSON lines, told apart by the file's
content). This module is what the API imports to validate requests: pydantic and ``shared`` only (and the
engine-free query check); DuckDB is imported inside ``run``, on the instance.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pijobs.shared.functions import BusinessFunction, OutputFile, RunContext
from pijobs.shared.inputs import Inputs
from pijobs.worker.sql.query import MAX_QUERY_CHARS, QueryShapeError, check_query_shape
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

DEADLINE_SECONDS = 3600  # boot, download, query and upload; the operator's size limits keep it in reach
INSTANCE_TYPE = "r7i.large"  # memory first: 16 GiB for 2 vCPUs, and DuckDB spills to disk past it


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
    resource_types: ClassVar[frozenset[str]] = frozenset(
        {"AWS::EC2::Instance", "AWS::EC2::LaunchTemplate", "AWS::EC2::SecurityGroup"}
    )
    instance_types = (INSTANCE_TYPE,)
    requirements = ("duckdb>=1.1,<2",)
    accepts_inputs = True

    def instance_type(self, params: SqlParams) -> str:
        return INSTANCE_TYPE

    def deadline_seconds(self, params: SqlParams) -> int:
        return DEADLINE_SECONDS

    def run(self, ctx: RunContext) -> OutputFile:
        from pijobs.worker.sql.engine import run_query  # lazy: DuckDB, on the instance only

        limits = ctx.limits if isinstance(ctx.limits, SqlLimits) else SqlLimits()
        return run_query(ctx, limits)
