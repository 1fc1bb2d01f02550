"""docs/webhooks.md shows one payload of each event type, as the embedded stack sent it: each follows a
``<!-- payload: TYPE -->`` marker. Here: they parse, every type has one, and each says what its type means
(its status, a transition the lifecycle allows). tests/e2e/test_webhook_docs.py compares their keys with
payloads delivered now, and rewrites them from a fresh capture with ``PIJOBS_WRITE_WEBHOOK_DOCS=1``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pijobs.shared.status import JobStatus, can_transition
from pijobs.shared.webhooks import ALL_EVENT_TYPES, EVENT_TYPES, PAYLOAD_MAX_BYTES, TEST_EVENT_TYPE

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
DOCUMENTED_TYPES = (*ALL_EVENT_TYPES, TEST_EVENT_TYPE)
PAYLOAD_BLOCK = re.compile(r"<!-- payload: (?P<type>[a-z_.]+) -->\n```json\n(?P<body>.*?)\n```", re.S)
# What a function decides (its parameters, its result's metadata): not the payload's own shape.
FUNCTIONS_OWN = frozenset({"params", "metadata"})


def documented_payloads(text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for match in PAYLOAD_BLOCK.finditer(text):
        assert match["type"] not in found, f"two payloads of {match['type']}"
        found[match["type"]] = json.loads(match["body"])
    return found


def with_payloads(text: str, payloads: dict[str, Any]) -> str:
    """``text`` with each marked block replaced by the payload of its type."""

    def block(match: re.Match[str]) -> str:
        body = json.dumps(payloads[match["type"]], indent=2, sort_keys=True, ensure_ascii=False)
        return f"<!-- payload: {match['type']} -->\n```json\n{body}\n```"

    return PAYLOAD_BLOCK.sub(block, text)


def shape(value: Any, name: str = "") -> Any:
    """The keys of ``value`` at every depth (a list by its first item), leaving out the function's own."""
    if name in FUNCTIONS_OWN:
        return "(the function's)"
    if isinstance(value, dict):
        return {key: shape(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


@pytest.fixture(scope="module")
def payloads() -> dict[str, Any]:
    return documented_payloads(DOCS.read_text(encoding="utf-8"))


def test_every_event_type_has_one_documented_payload(payloads: dict[str, Any]) -> None:
    assert sorted(payloads) == sorted(DOCUMENTED_TYPES)
    for type_, payload in payloads.items():
        assert set(payload) == {"type", "timestamp", "data"}, type_
        assert payload["type"] == type_
        assert len(json.dumps(payload, separators=(",", ":")).encode()) < PAYLOAD_MAX_BYTES


@pytest.mark.parametrize("status", list(EVENT_TYPES))
def test_each_documented_job_event_shows_the_status_its_type_means(
    payloads: dict[str, Any], status: JobStatus
) -> None:
    data = payloads[EVENT_TYPES[status]]["data"]
    assert data["status"] == status.value
    assert can_transition(JobStatus(data["previous_status"]), status)
    assert data["links"]["self"].endswith(f"/jobs/{data['job_id']}")
    assert data["updated_at"] == payloads[EVENT_TYPES[status]]["timestamp"]
    # why it did not (yet) succeed: the ending's error, or for a retry the lost attempt's, also in history
    assert (data["error"] is None) == (
        status in (JobStatus.PROVISIONING, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    )
    if status is JobStatus.QUEUED:
        (lost,) = data["history"]
        assert lost["attempt"] == data["event_attempt"] and lost["code"] == data["error"]["code"]


def test_the_documented_job_events_share_one_shape(payloads: dict[str, Any]) -> None:
    """Every job event carries the job's whole view (null where a field does not apply yet)."""
    keys = {type_: set(payloads[type_]["data"]) for type_ in ALL_EVENT_TYPES}
    assert len({frozenset(k) for k in keys.values()}) == 1, keys
