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
