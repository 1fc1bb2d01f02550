"""The webhook benchmark's count of deliveries that did not verify, and what it says of each."""

from __future__ import annotations

from bench.webhooks import Inbox
from pijobs.listen import Received


def _received(verified: bool, message_id: str, **headers: str) -> Received:
    return Received(verified, message_id, headers, {"data": {}} if verified else None, 1_000_100.0)


def test_each_delivery_that_did_not_verify_is_counted_and_described() -> None:
    inbox = Inbox()
    signed = {"webhook-timestamp": "1000000", "webhook-signature": "v1,a v1,b", "content-length": "812"}
    inbox.add(_received(False, "msg_1", **signed))
    inbox.add(_received(True, "msg_1", **signed))
    inbox.add(_received(False, "msg_2"))
    inbox.add(_received(True, "msg_3", **signed))

    assert inbox.unverified() == 2
    assert inbox.unverified_lines() == [
        " msg_1: timestamp age 100 s, 2 signature(s), 812 bytes, verified on another attempt",
        " msg_2: timestamp age none, 0 signature(s), - bytes, never verified",
    ]
