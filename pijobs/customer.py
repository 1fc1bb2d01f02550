"""What a customer does beyond one API call, for the command line and for a Python caller alike: name a job
or an upload by a unique prefix of its id, turn ``key=value`` text into a function's typed parameters, upload
local files given as a job's inputs, and choose where a result goes.

    from pijobs.client import PijobsClient
    from pijobs import customer

    client = customer.connect()                         # $PIJOBS_API_URL and $PIJOBS_API_KEY
    job_id = customer.resolve_job_id(client, "543c9766")
    params = customer.typed_params(client, "sql", ["query=SELECT 1", "percentiles=0.5,0.95"])

Errors follow :mod:`pijobs.errors`: a :class:`~pijobs.errors.UsageError` for a request that is wrong as
asked, the client's errors (an :class:`~pijobs.errors.OperationError`) for what the API refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pijobs.client import PijobsClient
from pijobs.errors import OperationError, UsageError
from pijobs.shared.ids import ID_PREFIX_PATTERN, is_id

URL_ENV = "PIJOBS_API_URL"
KEY_ENV = "PIJOBS_API_KEY"
PREFIX_PATTERN = re.compile(ID_PREFIX_PATTERN)
PREFIX_SCAN_LIMIT = 1000  # jobs or uploads looked through to expand a prefix

#: Called with each file ``resolve_inputs`` uploads: (path, upload); ``upload_file`` is the way to send one.
Uploader = Callable[[PijobsClient, Path], dict[str, Any]]


def connect(
    api_url: str | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None
) -> PijobsClient:
    """A client for the URL and key given, else ``$PIJOBS_API_URL`` and ``$PIJOBS_API_KEY``."""
    env = os.environ if env is None else env
    url = api_url or env.get(URL_ENV)
    key = api_key or env.get(KEY_ENV)
    if not url:
        raise UsageError(f"no API URL: pass --api-url or set {URL_ENV}")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"the API URL must start with http:// or https://, not {url!r}")
    if not key:
        raise UsageError(f"no API key: pass --api-key or set {KEY_ENV}")
    return PijobsClient(url, key)


# ---- ids by prefix -----------------------------------------------------------------------------------------
def resolve_job_id(client: PijobsClient, text: str) -> str:
    """A full job id, or the one job whose id starts with ``text`` (4+ hex digits, as git takes commits)."""
    return _resolve(text, (str(j.get("job_id", "")) for j in client.iter_jobs(limit=100)), "job")


def resolve_upload_id(client: PijobsClient, text: str) -> str:
    """A full upload id, or the one upload whose id starts with ``text``."""
    return _resolve(text, (str(u.get("upload_id", "")) for u in client.iter_uploads(limit=100)), "upload")


def _resolve(text: str, newest_first: Iterable[str], kind: str) -> str:
    if not PREFIX_PATTERN.fullmatch(text):
        return text  # a full id, or not an id at all: the API answers for it
    matches = []
    for number, found in enumerate(newest_first):
        if number >= PREFIX_SCAN_LIMIT:
            break
        if found.startswith(text):
            matches.append(found)
    if len(matches) > 1:
        raise UsageError(
            f"{text} is the start of {len(matches)} {kind}s: {', '.join(matches[:5])}; give more of it"
        )
    if not matches:
        raise OperationError(f"no {kind} of yours starts with {text} (among the newest {PREFIX_SCAN_LIMIT})")
    return matches[0]


# ---- parameters from text ----------------------------------------------------------------------------------
def typed_params(client: PijobsClient, function: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts as the function's parameters, each typed by the function's schema."""
    pairs = list(pairs)
    if not pairs:
        return {}
    properties = client.function(function).get("parameters", {}).get("properties", {})
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param takes KEY=VALUE, not {pair!r}")
        params[key] = typed_value(properties.get(key, {}), value)
    return params


def typed_value(schema: dict[str, Any], text: str) -> Any:
    """A command-line value as the parameter's JSON type: ``digits=100`` is a number where the schema says
    so; a list takes JSON or ``a,b,c`` (each item typed by the list's items)."""
    kind = _kind(schema)
    if kind == "array" and not text.lstrip().startswith("["):
        items = schema.get("items", {})
        return [typed_value(items, part.strip()) for part in text.split(",")] if text.strip() else []
    if kind in ("integer", "number", "boolean", "array", "object", "null"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text  # sent as it is: the API names the parameter and what it expects
    return text


def _kind(schema: dict[str, Any]) -> str | None:
    """The schema's type; for an optional one (``anyOf`` with null), the type of its other branch."""
    if "type" in schema:
        return str(schema["type"])
    kinds = [s.get("type") for s in schema.get("anyOf", []) if s.get("type") not in (None, "null")]
    return str(kinds[0]) if len(kinds) == 1 else None


def params_json(text: str) -> dict[str, Any]:
    """``--params-json``: one JSON object."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--params-json is not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(params, dict):
        raise UsageError("--params-json must be a JSON object")
    return params


# ---- inputs ------------------------------------------------------------------------------------------------
def resolve_inputs(
    client: PijobsClient, pairs: Iterable[str], *, upload: Uploader | None = None
) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """``NAME=FILE_OR_UPLOAD_ID`` pairs as ``(name, upload_id, upload)``: a file is uploaded (and checked)
    first, by ``upload`` (default: ``client.upload_file``), and ``upload`` is what it answered (None for an
    upload id, which may be a unique prefix)."""
    send = upload or (lambda c, path: c.upload_file(path, wait=True))
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--input takes NAME=FILE_OR_UPLOAD_ID, not {pair!r}")
        path = Path(value).expanduser()
        if path.is_file():
            sent = send(client, path)
            yield name, str(sent["upload_id"]), sent
        elif is_id(value):
            yield name, value, None
        elif PREFIX_PATTERN.fullmatch(value):
            yield name, resolve_upload_id(client, value), None
        else:
            raise UsageError(f"--input {name}: {value} is neither a file nor an upload id")


def default_result_path(job: dict[str, Any]) -> Path:
    """The last part of the result's key (``pi-15000.txt``), in the current directory."""
    name = PurePosixPath(str((job.get("result") or {}).get("filename") or "")).name
    return Path(name or f"{job.get('job_id', 'result')}.txt")
