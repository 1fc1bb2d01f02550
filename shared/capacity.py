"""Admission control: a capacity item in DynamoDB that bounds live stacks, overall and per tenant.

The item ``pk = capacity#global`` holds ``active`` (the count), ``limit`` (MaxActiveStacks, changeable at run
time), ``holders`` (job id -> owner, for every job holding a slot), ``owners`` (owner -> its live stacks),
``clock`` (the fair-share clock: the tag of the last job admitted) and ``tick_at`` (when the pending admission
tick is due, while jobs wait). Holding a slot is idempotent per job: a second acquire of a holder fails its
condition, and a second release is a no-op. The slot is taken in the same transaction as the job's
QUEUED -> PROVISIONING (``acquire_item``), so a slot never exists without its job's transition or the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pijobs.shared.aws import conditional_write, error_code
from pijobs.shared.errors import CapacityFullError
from pijobs.shared.ids import new_id

CAPACITY_KEY = {"pk": {"S": "capacity#global"}}
_EMPTY_MAP: dict[str, Any] = {"M": {}}
NO_OWNER = "-"  # a map key cannot be empty
ITEM_LIMIT_BYTES = 400 * 1024  # DynamoDB refuses a larger item
ITEM_BUDGET = 0.75  # the share of the limit the capacity item may reach at MAX_LIVE_JOBS
MAX_LIVE_JOBS = 5_000  # the most MaxActiveStacks may be: the item at that many holders fits ITEM_BUDGET
API_KEY_ID_CHARS = 10  # an owner is an API key's id: API Gateway makes them 10 characters long


class LimitTooHighError(ValueError):
    """MaxActiveStacks above MAX_LIVE_JOBS: the capacity item could not hold that many slots."""


def check_limit(limit: int) -> int:
    """``limit`` if MaxActiveStacks may be that, else ValueError (LimitTooHighError past the ceiling)."""
    if limit < 1:
        raise ValueError("MaxActiveStacks must be at least 1")
    if limit > MAX_LIVE_JOBS:
        raise LimitTooHighError(
            f"MaxActiveStacks must be at most {MAX_LIVE_JOBS:,} (one capacity item holds the live jobs)"
        )
    return limit


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size by DynamoDB's rules: each attribute's name and value (a string's UTF-8 bytes, a
    number's one byte per two significant digits plus one, a map's 3 bytes plus, per entry, its name, its
    value and one byte)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, content),) = value.items()
    if kind == "S":
        return len(content.encode())
    if kind == "N":
        digits = len(content.lstrip("-").replace(".", "").strip("0")) or 1
        return min(21, math.ceil(digits / 2) + 1)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in content.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in content)
    if kind in ("SS", "NS"):
        return sum(_value_size({kind[0]: v}) for v in content)
    return 1


def capacity_item(live: int, *, tenants: int, owner_chars: int = API_KEY_ID_CHARS) -> dict[str, Any]:
    """The capacity item as it is with ``live`` jobs of ``tenants`` tenants holding slots (job ids as
    long as shared/ids.py makes them, owners ``owner_chars`` long), a pending tick and a fractional clock:
    every attribute at its largest."""
    tenants = max(1, min(tenants, live)) if live else 1
    owners = [f"{n:0{owner_chars}d}" for n in range(tenants)]
    longest_number = {"N": "1" * 38}  # DynamoDB keeps 38 significant digits: the widest number it stores
    return {
        **CAPACITY_KEY,
        "active": {"N": str(live)},
        "limit": {"N": str(MAX_LIVE_JOBS)},
        "clock": longest_number,
        "tick_at": longest_number,
        "holders": {"M": {f"{n:0{len(new_id())}x}": {"S": owners[n % tenants]} for n in range(live)}},
        "owners": {"M": {o: {"N": str(math.ceil(live / tenants))} for o in owners} if live else {}},
    }


def _owner_key(owner: str) -> str:
    return owner or NO_OWNER


class CapacityCounter:
    def __init__(self, client: Any, table_name: str, *, default_limit: int) -> None:
        self._ddb = client
        self._table = table_name
        self._default_limit = default_limit

    # ---- reads ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any] | None:
        """``{"active", "limit", "holders" (set), "owner_of" (job -> owner), "owners" (owner -> live
        stacks, only those with some), "clock", "tick_at"}``, or None before first use."""
        item = self._ddb.get_item(TableName=self._table, Key=CAPACITY_KEY, ConsistentRead=True).get("Item")
        if item is None:
            return None
        holders = item.get("holders", _EMPTY_MAP)
        # A set of ids is how holders were kept before owners were: the reaper's recount rewrites it.
        owner_of = (
            {k: v["S"] for k, v in holders["M"].items()}
            if "M" in holders
            else dict.fromkeys(holders.get("SS", []), NO_OWNER)
        )
        owners = {k: int(v["N"]) for k, v in item.get("owners", _EMPTY_MAP)["M"].items()}
        return {
            "active": int(item.get("active", {"N": "0"})["N"]),
            "limit": int(item.get("limit", {"N": str(self._default_limit)})["N"]),
            "holders": set(owner_of),
            "owner_of": owner_of,
            "owners": {k: n for k, n in owners.items() if n > 0},
            "clock": float(item.get("clock", {"N": "0"})["N"]),
            "tick_at": float(item["tick_at"]["N"]) if "tick_at" in item else None,
            "current_shape": "M" in item.get("holders", {}) and "owners" in item,
        }

    def ensure(self) -> dict[str, Any]:
        """The state, first creating the item, or rewriting one kept before holders recorded owners."""
        state = self.state()
        if state is not None and state["current_shape"]:
            return state  # one read: every admission starts here
        if state is None:
            self._create(self._default_limit)
        else:
            self.recount(state["owner_of"], expected_active=state["active"])  # owners unknown: NO_OWNER
        return self.state() or {}

    # ---- taking and giving back ----------------------------------------------------------------------
    def acquire_item(self, job_id: str, owner: str, *, owner_cap: int | None, clock: float) -> dict[str, Any]:
        """The transaction item that takes a slot for ``job_id``: below MaxActiveStacks, below the owner's
        cap, not already held; it also moves the fair-share clock to the admitted job's tag."""
        names = {"#active": "active", "#limit": "limit", "#holders": "holders", "#job": job_id}
        names |= {"#owners": "owners", "#owner": _owner_key(owner), "#clock": "clock"}
        values = {
            ":one": {"N": "1"},
            ":zero": {"N": "0"},
            ":owner": {"S": _owner_key(owner)},
            ":clock": {"N": repr(clock)},
        }
        condition = "#active < #limit AND attribute_not_exists(#holders.#job)"
        if owner_cap is not None:
            condition += " AND (attribute_not_exists(#owners.#owner) OR #owners.#owner < :cap)"
            values[":cap"] = {"N": str(owner_cap)}
        return {
            "Update": {
                "TableName": self._table,
                "Key": CAPACITY_KEY,
                "UpdateExpression": "ADD #active :one SET #holders.#job = :owner, "
                "#owners.#owner = if_not_exists(#owners.#owner, :zero) + :one, #clock = :clock",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def acquire(self, job_id: str, *, owner: str = "", owner_cap: int | None = None) -> None:
        """Take a slot outside an admission (operators' repairs, tests); CapacityFullError if none is free
        for ``owner``. Holding one already is success."""
        state = self.ensure()
        request = self.acquire_item(job_id, owner, owner_cap=owner_cap, clock=state.get("clock", 0.0))
        try:
            self._ddb.update_item(**request["Update"])
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            if job_id in (self.state() or {}).get("holders", set()):
                return
            raise CapacityFullError(f"all {state['limit']} stack slots are taken (or {owner}'s own)") from exc

    def release(self, job_id: str) -> bool:
        """Give back ``job_id``'s slot; False if it held none (already released)."""
        state = self.state()
        if state is None or job_id not in state["owner_of"]:
            return False
        if not state["current_shape"]:
            state = self.ensure()
        owner = state.get("owner_of", {}).get(job_id)
        if owner is None:
            return False
        released = conditional_write(
            lambda: self._ddb.update_item(
                TableName=self._table,
                Key=CAPACITY_KEY,
                UpdateExpression="ADD #active :minus, #owners.#owner :minus REMOVE #holders.#job",
                ConditionExpression="#holders.#job = :owner",
                ExpressionAttributeNames={
                    "#active": "active",
                    "#holders": "holders",
                    "#job": job_id,
                    "#owners": "owners",
                    "#owner": owner,
                },
                ExpressionAttributeValues={":minus": {"N": "-1"}, ":owner": {"S": owner}},
            )
        )
        return released is not None  # else released meanwhile by someone else

    # ---- the operator's limit and the reaper's repair ------------------------------------------------
    def set_limit(self, limit: int) -> None:
        """Change MaxActiveStacks at run time (creates the item if needed); ValueError outside
        1..MAX_LIVE_JOBS."""
        check_limit(limit)
        self._ddb.update_item(
            TableName=self._table,
            Key=CAPACITY_KEY,
            UpdateExpression="SET #limit = :limit, #active = if_not_exists(#active, :zero), "
            "#holders = if_not_exists(#holders, :empty), #owners = if_not_exists(#owners, :empty)",
            ExpressionAttributeNames={
                "#limit": "limit",
                "#active": "active",
                "#holders": "holders",
                "#owners": "owners",
            },
            ExpressionAttributeValues={
                ":limit": {"N": str(limit)},
                ":zero": {"N": "0"},
                ":empty": _EMPTY_MAP,
            },
        )

    def recount(self, holders: Mapping[str, str], *, expected_active: int | None = None) -> bool:
        """Make the item agree with the live records (job id -> owner), so a lost release never shrinks
        capacity for good; owners without live stacks leave the map.

        With ``expected_active``, only if the count is still that (False when it moved meanwhile).
        """
        owners: dict[str, int] = {}
        for owner in holders.values():
            owners[_owner_key(owner)] = owners.get(_owner_key(owner), 0) + 1
        values: dict[str, Any] = {
            ":n": {"N": str(len(holders))},
            ":default": {"N": str(self._default_limit)},
            ":holders": {"M": {job: {"S": _owner_key(owner)} for job, owner in holders.items()}},
            ":owners": {"M": {owner: {"N": str(n)} for owner, n in owners.items()}},
        }
        request: dict[str, Any] = {}
        if expected_active is not None:
            # An item that a tick's claim created has no count yet: the same as a count of 0.
            absent = "attribute_not_exists(#active) OR " if expected_active == 0 else ""
            request["ConditionExpression"] = f"{absent}#active = :expected"
            values[":expected"] = {"N": str(expected_active)}
        written = conditional_write(
            lambda: self._ddb.update_item(
                TableName=self._table,
                Key=CAPACITY_KEY,
                UpdateExpression="SET #active = :n, #limit = if_not_exists(#limit, :default), "
                "#holders = :holders, #owners = :owners",
                ExpressionAttributeNames={
                    "#active": "active",
                    "#holders": "holders",
                    "#limit": "limit",
                    "#owners": "owners",
                },
                ExpressionAttributeValues=values,
                **request,
            )
        )
        return written is not None

    # ---- the admission tick --------------------------------------------------------------------------
    def claim_tick(self, due: float, *, previous: float | None = None, stale_before: float = 0.0) -> bool:
        """Note that one admission tick is on its way (due at ``due``, epoch seconds). True: the caller sends
        it. With ``previous``, only to follow that tick (its handler chains the next); without, only if no
        tick is pending, or the pending one is overdue since before ``stale_before`` (lost)."""
        values: dict[str, Any] = {":due": {"N": repr(due)}}
        if previous is not None:
            condition = "#tick = :previous"
            values[":previous"] = {"N": repr(previous)}
        else:
            condition = "attribute_not_exists(#tick) OR #tick < :stale"
            values[":stale"] = {"N": repr(stale_before)}
        return self._conditional("SET #tick = :due", condition, {"#tick": "tick_at"}, values)

    def end_tick(self, previous: float) -> bool:
        """No job waits: the chain of ticks ends (unless another tick replaced this one)."""
        return self._conditional(
            "REMOVE #tick", "#tick = :previous", {"#tick": "tick_at"}, {":previous": {"N": repr(previous)}}
        )

    def _conditional(
        self, expression: str, condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> bool:
        written = conditional_write(
            lambda: self._ddb.update_item(
                TableName=self._table,
                Key=CAPACITY_KEY,
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        )
        return written is not None

    def _create(self, limit: int) -> None:
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    **CAPACITY_KEY,
                    "active": {"N": "0"},
                    "limit": {"N": str(limit)},
                    "holders": _EMPTY_MAP,
                    "owners": _EMPTY_MAP,
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
