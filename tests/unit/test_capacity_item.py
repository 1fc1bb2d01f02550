"""The capacity item's size by DynamoDB's rules (shared/capacity.py's ``item_size``), and the item at its
largest that the facts test and the benchmark measure."""

from __future__ import annotations

from bench import pipeline as bench
from pijobs.shared.capacity import ITEM_BUDGET, capacity_item, item_size


def test_each_kind_of_value_counts_as_dynamodb_counts_it() -> None:
    # a name's and a string's UTF-8 bytes
    assert item_size({"é": {"S": "ab€"}}) == 2 + 5
    # a number: one byte per two significant digits (leading and trailing zeroes left out), plus one
    assert item_size({"n": {"N": "123456789"}}) == 1 + 6
    assert item_size({"n": {"N": "-0.00120"}}) == 1 + 2
    assert item_size({"n": {"N": "0"}}) == 1 + 2
    assert item_size({"n": {"N": "1" * 38}}) == 1 + 20  # the widest number DynamoDB keeps
    # a list or a map: 3 bytes, and one per element beside its value (and a map's keys)
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "7"}]}}) == 1 + 3 + (2 + 1) + (2 + 1)
    assert item_size({"l": {"L": []}}) == 1 + 3
    assert item_size({"m": {"M": {"k": {"L": [{"S": "x"}]}}}}) == 1 + 3 + (1 + (3 + 1 + 1) + 1)
    # a set: its elements' sizes, each as the kind it holds
    assert item_size({"s": {"SS": ["ab", "cde"]}}) == 1 + 5
    assert item_size({"s": {"NS": ["123456789", "1"]}}) == 1 + 6 + 2
    # a boolean or a null: one byte
    assert item_size({"b": {"BOOL": True}, "z": {"NULL": True}}) == (1 + 1) + (1 + 1)


def test_the_item_at_its_largest_has_every_holder_and_as_many_owners_as_tenants_asked() -> None:
    item = capacity_item(3, tenants=1)
    assert item["active"] == {"N": "3"} and len(item["holders"]["M"]) == 3
    assert item["owners"] == {"M": {"0000000000": {"N": "3"}}}
    assert capacity_item(3, tenants=0)["owners"] == item["owners"]  # at least one tenant
    assert len(capacity_item(3, tenants=5)["owners"]["M"]) == 3  # at most one per live job
    empty = capacity_item(0, tenants=4)
    assert empty["holders"] == {"M": {}} and empty["owners"] == {"M": {}} and empty["active"] == {"N": "0"}


def test_the_item_s_clock_and_tick_are_numbers_at_the_widest_dynamodb_keeps() -> None:
    item = capacity_item(1, tenants=1)
    assert item_size({"clock": item["clock"]}) == len("clock") + 20
    assert item_size({"tick_at": item["tick_at"]}) == len("tick_at") + 20


def test_the_benchmark_names_how_many_live_jobs_fit_dynamodb_s_400_kb() -> None:
    """DynamoDB refuses an item over 400 KB, 409,600 bytes: the row's figure of live jobs (one tenant each)
    is the most whose item stays within it."""
    live = int(
        bench.capacity_sizes(tenants=1_000)["capacity item: live jobs (one tenant each) at DynamoDB's 400 KB"]
    )

    assert (
        item_size(capacity_item(live, tenants=live))
        <= 409_600
        < item_size(capacity_item(live + 1, tenants=live + 1))
    )


def test_the_item_s_budget_at_the_most_live_jobs_leaves_room_under_dynamodb_s_limit() -> None:
    assert 0 < ITEM_BUDGET < 1  # a share of the 400 KB (the facts test holds the largest item to it)
