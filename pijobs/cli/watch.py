"""``pijobs ops status --watch``: the operator's live view, redrawn every few seconds.

Pure parts (``watch_view``, ``sparkline``, ``capacity_bar``, ``CompletionHistory``) turn what was read into a
rich renderable, so a test renders them to a recording console; ``watch_status`` is the loop around them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pijobs import ops
from pijobs.cli.failure import describe_failure
from pijobs.cli.render import status_table, stdout_console, table_lines, tenant_columns
from pijobs.shared import aws
from pijobs.shared.models import isoformat, utcnow
from pijobs.shared.status import TERMINAL_STATES
from pijobs.shared.store import JobStore

FINAL_STATES = tuple(sorted(TERMINAL_STATES))
COMPLETION_BUCKETS = 30  # the sparkline: completions per minute over the last half hour
COMPLETION_BUCKET_SECONDS = 60
COMPLETION_REREAD_SECONDS = 30  # the finished index is eventually consistent: each read overlaps the last
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_ZERO = "·"
BAR_WIDTH = 20
WATCH_INTERVAL = 2.0  # seconds between redraws, by default
WATCH_INTERVAL_RANGE = (0.1, 3600.0)


class CompletionHistory:
    """Jobs finished lately, for the sparkline: read from the finished index, the whole window once, then
    only what finished since the last read (plus an overlap, for the index's lag), so a redraw every few
    seconds costs the jobs that finished meanwhile, not the window again."""

    def __init__(
        self,
        finished_between: Callable[[str, str], list[dict[str, Any]]],
        *,
        buckets: int = COMPLETION_BUCKETS,
        bucket_seconds: int = COMPLETION_BUCKET_SECONDS,
    ) -> None:
        self._finished_between = finished_between
        self._buckets = buckets
        self._bucket = timedelta(seconds=bucket_seconds)
        self._jobs: dict[str, tuple[datetime, str]] = {}  # job id -> (finished at, final state)
        self._read_until: datetime | None = None

    def refresh(self, now: datetime) -> None:
        window_start = now - self._bucket * self._buckets
        start = window_start
        if self._read_until is not None:
            start = max(window_start, self._read_until - timedelta(seconds=COMPLETION_REREAD_SECONDS))
        for job in self._finished_between(isoformat(start), isoformat(now)):
            self._jobs[str(job["job_id"])] = (_parse_iso(str(job["finished_at"])), str(job["status"]))
        self._read_until = now
        self._jobs = {k: v for k, v in self._jobs.items() if v[0] > window_start}

    def view(self, now: datetime) -> dict[str, Any]:
        """``per_bucket`` (oldest first, the last one ending now), ``bucket_seconds``, ``by_state``."""
        per_bucket = [0] * self._buckets
        by_state = dict.fromkeys((state.value for state in FINAL_STATES), 0)
        for finished_at, state in self._jobs.values():
            back = int((now - finished_at) / self._bucket)
            if 0 <= back < self._buckets:
                per_bucket[self._buckets - 1 - back] += 1
                by_state[state] = by_state.get(state, 0) + 1
        return {
            "per_bucket": per_bucket,
            "bucket_seconds": int(self._bucket.total_seconds()),
            "by_state": by_state,
        }


def sparkline(counts: list[int]) -> str:
    """One character per count, scaled to the largest; a zero is a dot, so no work is not a little work."""
    top = max(counts, default=0)
    steps = len(SPARK_BLOCKS)
    return "".join(
        SPARK_ZERO if n <= 0 else SPARK_BLOCKS[min(steps - 1, -(-n * steps // top) - 1)] for n in counts
    )


def capacity_bar(active: int, limit: int, width: int = BAR_WIDTH) -> str:
    filled = width if limit <= 0 else min(width, round(width * active / limit))
    return "█" * filled + "░" * (width - filled)


def watch_view(
    status: dict[str, Any],
    tenants: list[dict[str, Any]],
    completions: dict[str, Any],
    *,
    now: datetime,
    problem: str | None = None,
    width: int | None = None,
) -> Any:
    """The live view, from what was read: the status table, capacity against the cap, tenants and the
    completions sparkline. Pure: a test renders it to a recording console."""
    from rich.console import Group
    from rich.text import Text

    capacity = status["capacity"]
    active, limit = capacity["active_stacks"], capacity["max_active_stacks"]
    title = f"pijobs stack {status['stack']} at {now.strftime('%H:%M:%S')} UTC"
    parts: list[Any] = [status_table(status, title=title)]
    bar = Text("capacity  ", style="bold")
    bar.append(capacity_bar(active, limit), style="red" if active >= limit else "green")
    bar.append(f"  {active}/{limit} stacks", style="bold")
    parts += [Text(""), bar, Text("")]
    if tenants:
        lines = table_lines(tenants, tenant_columns(tenants, wide=False), width=width)
        parts.append(Text("tenants", style="bold"))
        parts.append(Text("\n".join(lines)))
    else:
        parts.append(Text("tenants: none with a live stack or a waiting job"))
    counts = completions["per_bucket"]
    minutes = len(counts) * completions["bucket_seconds"] // 60
    line = Text(f"\ncompleted, per {completions['bucket_seconds']} s over {minutes} min  ", style="bold")
    line.append(sparkline(counts), style="cyan")
    line.append(f"  {sum(counts)} jobs, {counts[-1] if counts else 0} in the last bucket")
    parts.append(line)
    parts.append(Text("  " + ", ".join(f"{state} {n}" for state, n in completions["by_state"].items())))
    if problem:
        parts.append(Text(f"\nlast refresh failed: {problem}", style="red"))
    return Group(*parts)


def watch_status(
    resources: ops.StackResources,
    *,
    interval: float = WATCH_INTERVAL,
    iterations: int | None = None,
    console: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the view every ``interval`` seconds until Ctrl-C, or ``iterations`` views. A failed refresh
    keeps the last figures on screen under the error, and the next one tries again; only a failure of the
    first read ends the command (it would be one again at every redraw)."""
    from rich.live import Live

    store = JobStore(aws.client("dynamodb"), resources.table_name)
    history = CompletionHistory(store.finished_between)
    last: dict[str, Any] = {}

    def frame() -> Any:
        now = utcnow()
        try:
            waiting = store.waiting_by_owner()
            status = ops.gather_status(resources, waiting=waiting)
            tenants = ops.tenant_rows(resources, waiting=waiting, busy_only=True)
            history.refresh(now)
            last.update(status=status, tenants=tenants)  # a view's figures all come from one read
        except Exception as exc:
            if not last:
                raise
            return watch_view(
                last["status"],
                last["tenants"],
                history.view(now),
                now=now,
                problem=describe_failure(exc),
                width=console.width,
            )
        return watch_view(last["status"], last["tenants"], history.view(now), now=now, width=console.width)

    console = console or stdout_console()
    try:
        with Live(frame(), console=console, auto_refresh=False) as live:
            shown = 1
            while iterations is None or shown < iterations:
                sleep(interval)
                live.update(frame(), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass  # the operator is done watching: not a failure
    return 0


def _parse_iso(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
