"""What the commands print: tables that fit the terminal, one job's fields, progress on stderr, JSON.

The pure part (``table_lines``, ``short_ids``, the ``*_columns`` specs) turns rows into lines for a given
width, so a test renders them at any width; ``Output`` decides where things go: results and JSON to
stdout, messages and progress to stderr.

A table at a given width keeps its key columns whole (an id as a unique prefix, a status, a function) and
cuts or drops the others, the least useful first; ``--wide`` shows every column whole, ``--json`` the API's
data.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

GAP = "  "
ELLIPSIS = "…"
MIN_FLEX = 8  # a column narrower than this says nothing: it is dropped instead
ID_PREFIX = 12  # hex digits of an id shown in a narrow table; every command takes a unique prefix


# ---- tables ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One column: its header, how a row becomes its text, and how it gives way to a narrow terminal.

    ``flex`` columns share what the others leave and are cut with an ellipsis; ``drop`` orders the columns a
    narrow table leaves out (1 first; None: never, the column is shown whole whatever the width);
    ``wide_only`` columns appear with ``--wide`` only.
    """

    header: str
    cell: Callable[[dict[str, Any]], str]
    flex: bool = False
    drop: int | None = None
    wide_only: bool = False
    right: bool = False


def terminal_width() -> int | None:
    """The width to fit: $COLUMNS, else the terminal's; None (no limit) for a pipe or a file."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def table_lines(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, width: int | None) -> list[str]:
    """A header line and one line per row; within ``width`` where the never-dropped columns allow it.

    ``width`` None: every column, whole (``--wide``, or a pipe).
    """
    shown = [c for c in columns if width is None or not c.wide_only]
    cells = {id(c): [_one_line(c.cell(row)) for row in rows] for c in shown}
    natural = {id(c): max([len(c.header), *map(len, cells[id(c)])]) for c in shown}
    widths = dict(natural)
    if width is not None:
        shown, widths = _fit(shown, natural, width)
    lines = []
    for index in range(-1, len(rows)):
        parts = []
        for column in shown:
            text = column.header if index < 0 else cells[id(column)][index]
            parts.append(_cell(text, widths[id(column)], column.right))
        lines.append(GAP.join(parts).rstrip())
    return lines


def _fit(columns: list[Column], natural: dict[int, int], width: int) -> tuple[list[Column], dict[int, int]]:
    """The columns that fit ``width`` and their widths: drop by rank until the rest fit, then share out."""
    columns = list(columns)
    while True:
        fixed = sum(natural[id(c)] for c in columns if not c.flex)
        flex = [c for c in columns if c.flex]
        needed = fixed + len(GAP) * (len(columns) - 1) + sum(min(MIN_FLEX, natural[id(c)]) for c in flex)
        droppable = [c for c in columns if c.drop is not None]
        if needed <= width or not droppable:
            break
        columns.remove(min(droppable, key=lambda c: c.drop or 0))
    widths = {id(c): natural[id(c)] for c in columns if not c.flex}
    room = width - fixed - len(GAP) * (len(columns) - 1)
    for column in flex:
        widths[id(column)] = min(MIN_FLEX, natural[id(column)])
    room -= sum(widths[id(c)] for c in flex)
    wanted = {id(c): natural[id(c)] - widths[id(c)] for c in flex}
    total = sum(wanted.values())
    if total > 0 and room > 0:  # what is left, shared in proportion to what each would still take
        for column in flex:
            widths[id(column)] += min(wanted[id(column)], room * wanted[id(column)] // total)
        spare = width - sum(widths.values()) - len(GAP) * (len(columns) - 1)
        for column in flex:  # the rounding's remainder, to the first that can take it
            extra = min(spare, natural[id(column)] - widths[id(column)])
            widths[id(column)] += max(0, extra)
            spare -= max(0, extra)
    return columns, widths


def _cell(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + ELLIPSIS
    return text.rjust(width) if right else text.ljust(width)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def short_ids(ids: Iterable[str], *, minimum: int = ID_PREFIX) -> dict[str, str]:
    """Each id's shortest prefix of at least ``minimum`` characters that no other id here shares."""
    unique = sorted(set(ids))
    length = minimum
    while length < max(map(len, unique), default=0) and len({i[:length] for i in unique}) < len(unique):
        length += 1
    return {i: i[:length] for i in unique}


# ---- cells -------------------------------------------------------------------------------------------------
def when(stamp: Any, *, wide: bool = False) -> str:
    """``2026-12-06T20:31:05Z`` as ``12-06 20:31`` (``--wide``: as it is)."""
    if not stamp:
        return ""
    if wide:
        return str(stamp)
    try:
        moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return str(stamp)
    return moment.strftime("%m-%d %H:%M")


def size(count: Any) -> str:
    """Bytes for a person: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if count is None:
        return ""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(count)


def params_summary(params: Any, *, wide: bool = False) -> str:
    """A job's parameters on one line: ``digits=15000``; a list as ``a,b``, inputs by name."""
    if not isinstance(params, dict):
        return "" if params is None else str(params)
    parts = []
    for key, value in params.items():
        if isinstance(value, dict):
            text = ",".join(str(k) for k in value)
        elif isinstance(value, list):
            text = ",".join(str(v) for v in value)
        else:
            text = _one_line(str(value))
        if not wide and len(text) > 24:
            text = text[:23] + ELLIPSIS
        parts.append(f"{key}={text}")
    return " ".join(parts)


# ---- the tables of the commands ----------------------------------------------------------------------------
def job_columns(jobs: Sequence[dict[str, Any]], *, wide: bool) -> list[Column]:
    """``pijobs list``: id, status (with progress while it runs), function always; then what fits."""
    ids = short_ids([str(j.get("job_id", "")) for j in jobs]) if not wide else {}
    return [
        Column("ID", lambda j: ids.get(str(j.get("job_id")), str(j.get("job_id", "")))),
        Column("STATUS", job_state),
        Column("FUNCTION", lambda j: str(j.get("function", ""))),
        Column("PARAMS", lambda j: params_summary(j.get("params"), wide=wide), flex=True, drop=3),
        Column("NAME", lambda j: str(j.get("name") or ""), flex=True, drop=1),
        Column("CREATED", lambda j: when(j.get("created_at"), wide=wide), drop=2),
        Column("FINISHED", lambda j: when(j.get("finished_at"), wide=wide), wide_only=True),
    ]


def job_state(job: dict[str, Any]) -> str:
    """``RUNNING 42%`` while a job runs with progress, its status otherwise."""
    status = str(job.get("status", "?"))
    progress = job.get("progress")
    if status == "RUNNING" and isinstance(progress, int | float):
        return f"{status} {min(1.0, max(0.0, float(progress))):.0%}"
    return status


def upload_columns(uploads: Sequence[dict[str, Any]], *, wide: bool) -> list[Column]:
    ids = short_ids([str(u.get("upload_id", "")) for u in uploads]) if not wide else {}
    return [
        Column("UPLOAD", lambda u: ids.get(str(u.get("upload_id")), str(u.get("upload_id", "")))),
        Column("STATUS", lambda u: str(u.get("status", ""))),
        Column("FILENAME", lambda u: str(u.get("filename") or ""), flex=True, drop=3),
        Column(
            "SIZE", lambda u: str(u.get("bytes", "")) if wide else size(u.get("bytes")), right=True, drop=2
        ),
        Column("CREATED", lambda u: when(u.get("created_at"), wide=wide), drop=4),
        Column("EXPIRES", lambda u: when(u.get("expires_at"), wide=wide), wide_only=True),
        Column("REASON", lambda u: str(u.get("reason") or ""), flex=True, drop=1),
    ]


def function_columns(functions: Sequence[dict[str, Any]], *, wide: bool) -> list[Column]:
    return [
        Column("NAME", lambda f: str(f.get("name", ""))),
        Column("VERSION", lambda f: str(f.get("version", "")), drop=2),
        Column("PARAMETERS", lambda f: parameters_summary(f.get("parameters") or {}), flex=True, drop=3),
        Column("TITLE", lambda f: str(f.get("title", "")), flex=True, drop=1),
        Column("LIMITS", lambda f: params_summary(f.get("limits"), wide=True), wide_only=True),
    ]


def parameters_summary(schema: dict[str, Any]) -> str:
    """``digits:integer(1..10000000)``; an optional parameter is marked ``?``."""
    required = set(schema.get("required", []))
    parts = []
    for name, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type") or "/".join(
            str(s.get("type")) for s in spec.get("anyOf", []) if s.get("type") not in (None, "null")
        )
        bounds = ""
        low, high = spec.get("minimum"), spec.get("maximum")
        if low is not None or high is not None:
            bounds = f"({'' if low is None else low}..{'' if high is None else high})"
        parts.append(f"{name}{'' if name in required else '?'}:{kind or 'any'}{bounds}")
    return " ".join(parts)


def key_columns(keys: Sequence[dict[str, Any]], *, wide: bool) -> list[Column]:
    return [
        Column("ID", lambda k: str(k.get("id", ""))),
        Column("NAME", lambda k: str(k.get("name", "")), flex=True, drop=2),
        Column("STATE", lambda k: "enabled" if k.get("enabled") else "disabled"),
        Column("CREATED", lambda k: when(k.get("created"), wide=wide), drop=1),
    ]


def tenant_columns(rows: Sequence[dict[str, Any]], *, wide: bool) -> list[Column]:
    def cap(row: dict[str, Any]) -> str:
        text = "none" if row["max_active"] is None else str(row["max_active"])
        return text if row["own_cap"] else f"{text} (default)"

    return [
        Column("TENANT", lambda r: str(r["tenant"])),
        Column("WEIGHT", lambda r: f"{r['weight']:g}", right=True),
        Column("CAP", cap),
        Column("LIVE", lambda r: str(r["live_stacks"]), right=True),
        Column("WAITING", lambda r: str(r["waiting"]), right=True),
    ]


def message_columns(messages: Sequence[dict[str, Any]], *, wide: bool) -> list[Column]:
    return [
        Column("MESSAGE", lambda m: str(m["message_id"])),
        Column("JOB", lambda m: str(m.get("job_id") or ""), drop=2),
        Column("SENT", lambda m: when(m.get("sent_at"), wide=wide), drop=1),
        Column("RECEIVES", lambda m: str(m["receive_count"]), right=True),
        Column("BODY", lambda m: str(m["body"]), flex=True, drop=3),
    ]


# ---- the operator's status ---------------------------------------------------------------------------------
def status_table(status: dict[str, Any], *, title: str | None = None) -> Any:
    """``ops status`` as a table, from what ``gather_status`` read."""
    from rich.table import Table

    queue, dlq = status["queue"], status["dead_letter_queue"]
    jobs, capacity, mapping = status["live_jobs"], status["capacity"], status["event_source_mapping"]
    title = title or f"pijobs stack {status['stack']}"
    table = Table(title=title, show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("jobs queue", _queue_text(queue))
    table.add_row("dead-letter queue", _queue_text(dlq))
    table.add_row("live jobs", ", ".join(f"{state} {count}" for state, count in jobs.items()))
    table.add_row(
        "active stacks",
        f"{capacity['active_stacks']} of MaxActiveStacks {capacity['max_active_stacks']}",
    )
    waiting = status["waiting_for_capacity"]
    table.add_row("waiting for a slot", f"{waiting['jobs']} jobs of {waiting['tenants']} tenants")
    table.add_row("event source mapping", f"{mapping['id']} ({mapping['state']})")
    table.add_row("  BatchSize", str(mapping["batch_size"]))
    concurrency = mapping["maximum_concurrency"]
    table.add_row("  MaximumConcurrency", "not set (no cap)" if concurrency is None else str(concurrency))
    table.add_row("  MaximumBatchingWindowInSeconds", str(mapping["maximum_batching_window_s"]))
    return table


def _queue_text(counts: dict[str, Any]) -> str:
    return f"{counts['visible']} waiting, {counts['in_flight']} in flight, {counts['delayed']} delayed"


# ---- one job -----------------------------------------------------------------------------------------------
JOB_FIELDS = (
    "job_id",
    "status",
    "function",
    "version",
    "params",
    "name",
    "cost_center",
    "attempts",
    "progress",
    "estimated_finish_at",
    "created_at",
    "dispatched_at",
    "started_at",
    "finished_at",
)


def job_rows(job: dict[str, Any]) -> list[tuple[str, str]]:
    """The job as (field, text) rows for a person."""
    rows = []
    for name in JOB_FIELDS:
        value = job.get(name)
        if value is None or (name == "estimated_finish_at" and job.get("status") != "RUNNING"):
            continue
        if name == "progress":
            text = f"{float(value):.0%}"
        elif name == "params":
            text = params_summary(value, wide=True)
        else:
            text = str(value)
        rows.append(("eta" if name == "estimated_finish_at" else name, text))
    error = job.get("error")
    if error:
        rows.append(("error", f"{error.get('code')}: {error.get('message')}"))
    result = job.get("result")
    if result:
        rows += [("result", str(result.get("filename"))), ("bytes", str(result.get("bytes")))]
        rows.append(("sha256", str(result.get("sha256"))))
        metadata = result.get("metadata") or {}
        if isinstance(metadata.get("columns"), list):  # a table (sql): its shape, as a person reads it
            columns = ", ".join(f"{c.get('name')} {c.get('type')}" for c in metadata["columns"])
            rows.append(("columns", columns))
        if "rows" in metadata:
            rows.append(("rows", str(metadata["rows"])))
    return rows


def progress_state(job: dict[str, Any]) -> tuple[str, float | None, float]:
    """(description, total, completed) of a progress bar for ``job``; total None while progress is unknown."""
    status = str(job.get("status", "?"))
    progress = job.get("progress")
    if progress is None:
        return status, None, 0.0
    return status, 1.0, max(0.0, min(1.0, float(progress)))


def eta_text(job: dict[str, Any], now: datetime | None = None) -> str:
    """``ETA 20:41:05 (2m10s)`` from the job's own rate (the API's estimated_finish_at); '' without one."""
    stamp = job.get("estimated_finish_at")
    if not stamp or job.get("status") != "RUNNING":
        return ""
    try:
        finish = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return ""
    left = max(0, int((finish - (now or datetime.now(timezone.utc))).total_seconds()))
    minutes, seconds = divmod(left, 60)
    hours, minutes = divmod(minutes, 60)
    span = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
    return f"ETA {finish.astimezone(timezone.utc):%H:%M:%S} UTC ({span})"


# ---- where it goes -----------------------------------------------------------------------------------------
@dataclass
class Output:
    """JSON and results to stdout, messages and progress to stderr; ``wide`` turns off fitting."""

    json_mode: bool = False
    wide: bool = False

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        print(text, flush=True)

    def either(self, data: Any, human: Callable[[], None]) -> None:
        """With ``--json``, ``data`` as JSON; else what ``human`` prints for a person."""
        if self.json_mode:
            self.json(data)
        else:
            human()

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print(f"pijobs: {text}", file=sys.stderr, flush=True)

    def table(
        self,
        rows: Sequence[dict[str, Any]],
        columns: Callable[..., list[Column]],
        *,
        empty: str,
    ) -> None:
        """A header and the rows, fitted to the terminal (``--wide``: whole); ``empty`` to stderr if none."""
        if not rows:
            self.note(empty)
            return
        width = None if self.wide else terminal_width()
        for text in table_lines(rows, columns(rows, wide=width is None), width=width):
            self.line(text)

    def job(self, job: dict[str, Any]) -> None:
        rows = job_rows(job)
        url = (job.get("result") or {}).get("url")
        if url:
            rows.append(("url", str(url)))  # on one line, whatever the width: a terminal cuts no link
        label = max((len(name) for name, _ in rows), default=0)
        for name, value in rows:
            self.line(f"{name.ljust(label)}  {value}")


def stdout_console() -> Any:
    """A rich console on stdout for the operator's views (``ops status``); fitted as the tables are."""
    from rich.console import Console

    width = terminal_width()
    return Console(highlight=False, width=width or PIPE_WIDTH, soft_wrap=False)


PIPE_WIDTH = 200  # rich needs a width off a terminal: wide enough for one line per row
