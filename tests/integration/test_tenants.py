"""An operator's tenant settings under moto (pijobs ops tenant): weights and caps, their bounds, and the
policies admission reads for many tenants at once."""

from __future__ import annotations

from typing import Any

import pytest

from pijobs.shared.fairshare import TenantPolicy
from pijobs.shared.tenants import Tenant, TenantStore
from tests.integration.conftest import Cloud
from tests.integration.replica import LaggingReplica


def test_a_tenant_without_settings_has_the_defaults(cloud: Cloud) -> None:
    tenants = TenantStore(cloud.ddb, cloud.table)

    assert tenants.get("key-a") == Tenant("key-a", TenantPolicy(weight=1.0, max_active=None), 0.0)
    assert tenants.set_policy("key-a") == tenants.get("key-a")  # nothing to change: nothing written
    assert tenants.all() == []


def test_a_weight_from_0_01_to_100_and_a_cap_from_1_are_kept_and_anything_else_refused(cloud: Cloud) -> None:
    tenants = TenantStore(cloud.ddb, cloud.table)

    assert tenants.set_policy("key-a", weight=0.01, max_active=1).policy == TenantPolicy(0.01, 1)
    assert tenants.set_policy("key-b", weight=100).policy == TenantPolicy(100.0, None)
    for refused, says in (
        ({"weight": 0.0099}, r"0\.01\.\.100\.0"),
        ({"weight": 100.01}, "0.01..100.0"),
        ({"max_active": 0}, "at least 1"),
    ):
        with pytest.raises(ValueError, match=says):
            tenants.set_policy("key-c", **refused)  # type: ignore[arg-type]

    assert [(t.owner, t.policy) for t in tenants.all()] == [
        ("key-a", TenantPolicy(0.01, 1)),
        ("key-b", TenantPolicy(100.0, None)),
    ]
    assert tenants.set_policy("key-a", clear_cap=True).policy == TenantPolicy(0.01, None)
    assert tenants.get("key-a").policy == TenantPolicy(0.01, None)


def test_the_policies_of_more_tenants_than_one_batch_read_holds_are_all_read(cloud: Cloud) -> None:
    tenants = TenantStore(cloud.ddb, cloud.table)
    owners = [f"key-{n:03}" for n in range(201)]
    for n in (0, 99, 100, 199, 200):
        tenants.set_policy(owners[n], max_active=n + 1)

    policies = tenants.policies(reversed(owners))

    assert list(policies) == owners
    assert {owner: p.max_active for owner, p in policies.items() if p != TenantPolicy()} == {
        owners[n]: n + 1 for n in (0, 99, 100, 199, 200)
    }


def test_a_policy_set_a_moment_ago_is_the_one_admission_reads(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Policies are read consistently: a replica that has not seen the operator's change does not answer."""
    replica = LaggingReplica(monkeypatch)
    tenants = TenantStore(cloud.ddb, cloud.table)
    replica.lag()

    tenants.set_policy("key-a", weight=2.0, max_active=3)

    assert tenants.policies(["key-a", "key-b"]) == {"key-a": TenantPolicy(2.0, 3), "key-b": TenantPolicy()}
    assert tenants.get("key-a").policy == TenantPolicy(2.0, 3)


class Throttled:
    """A DynamoDB client whose first BatchGetItem reads one key and returns the rest as UnprocessedKeys, as
    DynamoDB does when a read is throttled or too large."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.batches = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> Any:
        self.batches += 1
        if self.batches > 1:
            return self._client.batch_get_item(RequestItems=RequestItems)
        ((table, request),) = RequestItems.items()
        answer = self._client.batch_get_item(RequestItems={table: {**request, "Keys": request["Keys"][:1]}})
        answer["UnprocessedKeys"] = {table: {**request, "Keys": request["Keys"][1:]}}
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_policies_left_unprocessed_by_a_throttled_read_are_read_again(cloud: Cloud) -> None:
    TenantStore(cloud.ddb, cloud.table).set_policy("key-a", max_active=1)
    TenantStore(cloud.ddb, cloud.table).set_policy("key-b", max_active=2)
    throttled = Throttled(cloud.ddb)

    policies = TenantStore(throttled, cloud.table).policies(["key-a", "key-b"])

    assert policies == {"key-a": TenantPolicy(1.0, 1), "key-b": TenantPolicy(1.0, 2)}
    assert throttled.batches == 2
