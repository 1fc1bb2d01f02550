"""API keys on the usage plan: the same calls on AWS and on the local stack."""

from __future__ import annotations

import secrets
from typing import Any


def create_api_key(apigw: Any, usage_plan_id: str, name: str) -> tuple[str, str]:
    """Create an enabled key, attach it to the usage plan and return (id, value)."""
    value = secrets.token_urlsafe(30)
    key = apigw.create_api_key(name=name, enabled=True, value=value)
    apigw.create_usage_plan_key(usagePlanId=usage_plan_id, keyId=key["id"], keyType="API_KEY")
    return str(key["id"]), value


def find_usage_plan(apigw: Any, name_prefix: str = "pijobs") -> str:
    """The id of the pijobs usage plan (the one whose name starts with ``name_prefix``)."""
    plans = [p for p in apigw.get_usage_plans().get("items", []) if p.get("name", "").startswith(name_prefix)]
    if len(plans) != 1:
        names = ", ".join(p.get("name", "?") for p in plans) or "none"
        raise LookupError(f"expected one usage plan named {name_prefix}*, found: {names}")
    return str(plans[0]["id"])


def list_api_keys(apigw: Any, usage_plan_id: str) -> list[dict[str, Any]]:
    """The keys on the usage plan (id, name, enabled, created), never their values."""
    on_plan: set[str] = set()
    for page in apigw.get_paginator("get_usage_plan_keys").paginate(usagePlanId=usage_plan_id):
        on_plan.update(item["id"] for item in page.get("items", []))
    keys = []
    for page in apigw.get_paginator("get_api_keys").paginate(includeValues=False):
        for key in page.get("items", []):
            if key["id"] in on_plan:
                created = key.get("createdDate")
                keys.append(
                    {
                        "id": key["id"],
                        "name": key.get("name", ""),
                        "enabled": bool(key.get("enabled")),
                        "created": created.isoformat(timespec="seconds") if created else None,
                    }
                )
    return sorted(keys, key=lambda k: (k["created"] or "", k["id"]))


def revoke_api_key(apigw: Any, usage_plan_id: str, key_id: str) -> None:
    """Delete a key of the usage plan; its jobs stay (they are the owner's, by key id)."""
    if key_id not in {k["id"] for k in list_api_keys(apigw, usage_plan_id)}:
        raise LookupError(f"no API key {key_id} on usage plan {usage_plan_id}: pijobs keys list shows them")
    apigw.delete_usage_plan_key(usagePlanId=usage_plan_id, keyId=key_id)
    apigw.delete_api_key(apiKey=key_id)
