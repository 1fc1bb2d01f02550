"""Tenants' fair-share items: ``pk = tenant#<owner>`` holds the operator's weight and cap for one API key
and the tag of the tenant's last parked job (shared/fairshare.py), which ``take_tag`` moves on atomically."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pijobs.shared.aws import conditional_write
from pijobs.shared.fairshare import DEFAULT_WEIGHT, WEIGHT_RANGE, TenantPolicy, tag_step

TENANT_PREFIX = "tenant#"


@dataclass(frozen=True)
class Tenant:
    owner: str
    policy: TenantPolicy
    last_tag: float  # 0 before its first parked job


def tenant_key(owner: str) -> dict[str, Any]:
    return {"pk": {"S": f"{TENANT_PREFIX}{owner}"}}


def _tenant(owner: str, item: dict[str, Any] | None) -> Tenant:
    item = item or {}
    weight = float(item["weight"]["N"]) if "weight" in item else DEFAULT_WEIGHT
    max_active = int(item["max_active"]["N"]) if "max_active" in item else None
    last_tag = float(item["last_tag"]["N"]) if "last_tag" in item else 0.0
    return Tenant(owner, TenantPolicy(weight=weight, max_active=max_active), last_tag)


class TenantStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def get(self, owner: str) -> Tenant:
        item = self._ddb.get_item(TableName=self._table, Key=tenant_key(owner), ConsistentRead=True)
        return _tenant(owner, item.get("Item"))

    def policies(self, owners: Iterable[str]) -> dict[str, TenantPolicy]:
        """The policies of ``owners`` (the defaults for those without an item)."""
        wanted = sorted(set(owners))
        found: dict[str, TenantPolicy] = {}
        for start in range(0, len(wanted), 100):  # BatchGetItem takes 100 keys
            keys = [tenant_key(owner) for owner in wanted[start : start + 100]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = self._ddb.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    owner = item["pk"]["S"].removeprefix(TENANT_PREFIX)
                    found[owner] = _tenant(owner, item).policy
                request = response.get("UnprocessedKeys") or {}
        return {owner: found.get(owner, TenantPolicy()) for owner in wanted}

    def take_tag(self, tenant: Tenant, *, clock: float) -> float:
        """The tag of ``tenant``'s next parked job, ``max(clock, last tag) + 1 / weight``, taken atomically.

        However many of the tenant's jobs are parked at once, each gets its own tag in one or two writes
        and never a retry: an idle tenant (its last tag behind the clock) starts at the clock with one
        conditional write; otherwise, or when a concurrent parking moved the last tag past the clock
        first, an ``ADD`` moves the last tag on by one step and returns it. The last tag only grows, so two
        parkings never get the same tag. ``tenant`` is as read just before: only its weight and a hint
        of where its last tag is are used.
        """
        step = tag_step(tenant.policy.weight)
        if tenant.last_tag < clock:
            fresh = clock + step
            started = conditional_write(
                lambda: self._ddb.update_item(
                    TableName=self._table,
                    Key=tenant_key(tenant.owner),
                    UpdateExpression="SET #last = :fresh",
                    ConditionExpression="attribute_not_exists(#last) OR #last < :clock",
                    ExpressionAttributeNames={"#last": "last_tag"},
                    ExpressionAttributeValues={":fresh": {"N": repr(fresh)}, ":clock": {"N": repr(clock)}},
                )
            )
            if started is not None:
                return fresh
        moved = self._ddb.update_item(
            TableName=self._table,
            Key=tenant_key(tenant.owner),
            UpdateExpression="ADD #last :step",
            ExpressionAttributeNames={"#last": "last_tag"},
            ExpressionAttributeValues={":step": {"N": repr(step)}},
            ReturnValues="UPDATED_NEW",
        )
        return float(moved["Attributes"]["last_tag"]["N"])

    def set_policy(
        self,
        owner: str,
        *,
        weight: float | None = None,
        max_active: int | None = None,
        clear_cap: bool = False,
    ) -> Tenant:
        """Change a tenant's weight and/or cap (``clear_cap``: back to the platform's default cap)."""
        sets: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if weight is not None:
            if not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:
                raise ValueError(f"a weight is {WEIGHT_RANGE[0]}..{WEIGHT_RANGE[1]}, not {weight}")
            sets.append("#weight = :weight")
            names["#weight"] = "weight"
            values[":weight"] = {"N": repr(float(weight))}
        if max_active is not None:
            if max_active < 1:
                raise ValueError("a tenant's MaxActiveStacks is at least 1")
            sets.append("#cap = :cap")
            names["#cap"] = "max_active"
            values[":cap"] = {"N": str(max_active)}
        expression = ("SET " + ", ".join(sets)) if sets else ""
        if clear_cap:
            expression += " REMOVE #cap"
            names["#cap"] = "max_active"
        if not expression:
            return self.get(owner)
        request: dict[str, Any] = {"ExpressionAttributeNames": names}
        if values:
            request["ExpressionAttributeValues"] = values
        response = self._ddb.update_item(
            TableName=self._table,
            Key=tenant_key(owner),
            UpdateExpression=expression.strip(),
            ReturnValues="ALL_NEW",
            **request,
        )
        return _tenant(owner, response.get("Attributes"))

    def all(self) -> list[Tenant]:
        """Every tenant with an item (an operator's listing: a scan of the tenant items)."""
        tenants: list[Tenant] = []
        paginator = self._ddb.get_paginator("scan")
        for page in paginator.paginate(
            TableName=self._table,
            FilterExpression="begins_with(pk, :prefix)",
            ExpressionAttributeValues={":prefix": {"S": TENANT_PREFIX}},
        ):
            for item in page.get("Items", []):
                tenants.append(_tenant(item["pk"]["S"].removeprefix(TENANT_PREFIX), item))
        return sorted(tenants, key=lambda t: t.owner)
