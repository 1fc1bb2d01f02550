"""Webhooks, the pure part: event types, the Standard Webhooks signature, the retry schedule and which URLs
a webhook may call (docs/webhooks.md).

A job's state-change event (shared/lifecycle.py's outbox item) becomes one event type; each of the owner's
webhooks that wants that type, and the job's own callback URL, gets one delivery of it, signed with the
target's secret. Nothing here does I/O except ``resolve`` (DNS), which callers may replace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pijobs.shared.status import JobStatus

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# The event type of each status reached; QUEUED is reached again only when an attempt failed (job.retrying).
EVENT_TYPES: dict[JobStatus, str] = {
    JobStatus.QUEUED: "job.retrying",
    JobStatus.PROVISIONING: "job.provisioning",
    JobStatus.RUNNING: "job.running",
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.TIMED_OUT: "job.timed_out",
    JobStatus.CANCELLED: "job.cancelled",
}
ALL_EVENT_TYPES: tuple[str, ...] = tuple(sorted(EVENT_TYPES.values()))
TEST_EVENT_TYPE = "webhook.test"
# Seconds after each failed attempt before the next (Standard Webhooks' suggested schedule); then it fails.
RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1  # each delay is stretched or shortened by up to this fraction
DELIVERY_TIMEOUT_SECONDS = 15.0
PAYLOAD_MAX_BYTES = 20 * 1024
ROTATION_GRACE_SECONDS = 24 * 3600  # a rotated-out secret still signs this long


def event_type(status: str) -> str:
    return EVENT_TYPES[JobStatus(status)]


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with the secret's bytes (Standard Webhooks)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def signed_headers(secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery; every current secret signs (space-separated), so a receiver still
    holding the rotated-out secret verifies during the grace period."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in secrets_),
        "content-type": "application/json",
    }


TOLERANCE_SECONDS = 5 * 60


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float) -> bool:
    """True when one of the ``webhook-signature`` entries is this secret's for ``body``, and the timestamp is
    within five minutes of ``now`` (replays are refused)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        offered = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = signature(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, entry) for entry in offered)


def retry_delay(
    failed_attempts: int, schedule: Sequence[float], rng: random.Random | None = None
) -> float | None:
    """Seconds to wait after the ``failed_attempts``-th failed attempt, with jitter; None once the schedule is
    used up (the delivery has failed)."""
    if failed_attempts < 1 or failed_attempts > len(schedule):
        return None
    base = schedule[failed_attempts - 1]
    return max(0.0, base * (1 + (rng or random).uniform(-JITTER, JITTER)))


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"1,2,5"`` -> (1.0, 2.0, 5.0): an operator's schedule (the embedded stack compresses the default)."""
    values = tuple(float(part) for part in text.split(",") if part.strip())
    if not values or any(v < 0 for v in values):
        raise ValueError("a comma-separated list of non-negative seconds")
    return values


# ---- which URLs may be called ------------------------------------------------------------------------
@dataclass(frozen=True)
class UrlPolicy:
    """``allow_loopback_http``: the embedded stack's receivers on this machine (http or https to 127.0.0.1
    and ::1); everywhere else only https to public addresses."""

    allow_loopback_http: bool = False


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class UrlRefused(ValueError):
    """Why a URL may not be called (a problem the customer can read)."""


@dataclass(frozen=True)
class Target:
    """A URL checked for one connection: the address to connect to, and the host to name."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str


def check_url(url: str, policy: UrlPolicy, resolver: Resolver = resolve) -> Target:
    """Resolve once and refuse what a webhook may not call; the caller connects to ``Target.address``."""
    if len(url) > 2048:
        raise UrlRefused("must be at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("not a valid URL") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("https", "http"):
        raise UrlRefused("must be an https URL")
    if not host:
        raise UrlRefused("must name a host")
    if parts.username or parts.password:
        raise UrlRefused("must not carry credentials")
    port = port or (443 if scheme == "https" else 80)
    try:
        addresses = [host] if _is_literal(host) else resolver(host, port)
    except OSError as exc:
        raise UrlRefused(f"the host {host} does not resolve") from exc
    if not addresses:
        raise UrlRefused(f"the host {host} does not resolve")
    loopback = [a for a in addresses if ipaddress.ip_address(a).is_loopback]
    if scheme == "http" and not (policy.allow_loopback_http and len(loopback) == len(addresses)):
        raise UrlRefused("must be an https URL")
    for address in addresses:
        problem = _address_problem(ipaddress.ip_address(address), policy)
        if problem:
            raise UrlRefused(f"the host {host} is {problem}; webhooks call public addresses only")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, scheme, host, port, addresses[0], path)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: UrlPolicy) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_loopback:
        return None if policy.allow_loopback_http else "a loopback address"
    if isinstance(address, ipaddress.IPv6Address) and (address.sixtofour or address.teredo):
        # the IPv4 address inside is another host's; Python 3.10-3.12 call all of 2002::/16 global
        return "a 6to4 or Teredo tunnel address"
    checks = (
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_unspecified", "an unspecified address"),
        ("is_private", "a private address"),
    )
    for attribute, problem in checks:
        if getattr(address, attribute):
            return problem
    if not address.is_global:
        return "not a public address"
    return None


def event_payload(type_: str, timestamp: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "timestamp": timestamp, "data": data}
