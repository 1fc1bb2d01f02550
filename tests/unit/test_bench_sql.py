"""The sql benchmark's pure parts: the worker's events, the phases, the table."""

from __future__ import annotations

import json

from bench.sql import Report, Timeline, table, worker_events


def timeline() -> Timeline:
    return Timeline(
        upload_started=0.0,
        upload_sent=2.0,
        available=3.0,
        created=3.5,
        dispatched=3.75,
        started=4.0,
        downloaded=5.0,
        computed=8.0,
        stored=8.5,
        finished=8.6,
        seen=9.0,
    )


def test_the_workers_events_of_one_job_by_name_with_its_peak_memory() -> None:
    lines = [
        json.dumps({"event": "input_downloaded", "job_id": "j1", "timestamp": "2026-01-01T00:00:01.5Z"}),
        json.dumps({"event": "input_downloaded", "job_id": "j2", "timestamp": "2026-01-01T00:00:09Z"}),
        json.dumps(
            {
                "event": "job_finished",
                "job_id": "j1",
                "timestamp": "2026-01-01T00:00:03Z",
                "peak_rss_bytes": 7,
            }
        ),
        "not json",
    ]

    events = worker_events(lines, "j1")

    assert events["job_finished"] - events["input_downloaded"] == 1.5
    assert events["peak_rss_bytes"] == 7 and len(events) == 3


def test_the_phases_add_up_to_the_total_and_running_is_download_query_and_upload() -> None:
    line = timeline()

    assert sum(line.phases().values()) == line.total == 9.0
    assert line.running == 4.5


def test_the_table_shows_each_phase_the_comparisons_and_the_targets() -> None:
    report = Report(rows=1000, file_bytes=1 << 20, timeline=timeline(), duckdb_s=4.0, others={"polars": 5.0},
                    peak_rss_bytes=float(3 << 30), sampled_hwm_bytes=1 << 30)  # fmt: skip

    text = table(report)

    assert "query (DuckDB, result written)" in text and "polars in-process" in text
    assert "running phase / in-process DuckDB: 1.12 (meets the target <= 1.25)" in text
    assert "(ru_maxrss): 3,072 MiB (misses" in text and "(VmHWM sampled): 1,024 MiB (meets" in text
