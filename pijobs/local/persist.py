"""A local stack that remembers: its data kept in a directory across restarts of ``pijobs up``.

moto keeps everything in memory. What a user of the local stack would miss after a restart is copied to
``DataDir`` every few seconds and at the stop, and put back into the fresh moto at the next start:

- ``keys.json``: the API keys of the usage plan (id, name, value, enabled), restored with their ids, since a
  key's id is its owner's identity (jobs and results belong to it);
- ``results/``: the results bucket's objects, one file each, with ``results.json`` (content type, metadata,
  ETag) beside them; copied incrementally, by ETag;
- ``table.jsonl``: every item of the jobs table (jobs, idempotency keys, the capacity counter), in
  DynamoDB's own JSON;
- ``state.json``: the API's and the AWS endpoint's ports and the default key's id, so a restart answers at the
  same addresses with the same key where the ports are free (the exports ``pijobs up`` printed stay good).

Each file is replaced atomically; results are written before the table, so a record never names a result
that is not on disk. A SIGKILL loses at most the last interval. What is rebuilt rather than kept: the
primary stack (deployed again from its template), the job stacks and the queues. Jobs queued at the stop
are sent again at the start; jobs that were provisioning or running find their stack gone and are retried or
failed by the reaper, by its usual rules.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from pijobs.shared.capacity import CAPACITY_KEY
from pijobs.shared.fairshare import shard_of
from pijobs.shared.logs import get_logger
from pijobs.shared.models import JobMessage
from pijobs.shared.queue import JobQueue
from pijobs.shared.status import JobStatus
from pijobs.shared.store import DONE_SHARD, LIVE_SHARD

log = get_logger(__name__)

FORMAT_VERSION = 1
DEFAULT_INTERVAL_S = 2.0
_QUEUED = "QUEUED"


def default_data_dir() -> Path:
    """Per user: ``$XDG_DATA_HOME/pijobs/local`` (``~/.local/share/pijobs/local`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pijobs" / "local"


class DataDirInUseError(RuntimeError):
    """Another ``pijobs up`` holds the data directory."""


class DataDirError(RuntimeError):
    """The data directory cannot be used (not writable, or written by an unknown format)."""


@dataclass(frozen=True)
class SavedKey:
    key_id: str
    name: str
    value: str
    enabled: bool


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class DataDir:
    """The directory's files and the lock that keeps a second ``pijobs up`` out of it."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        self._lock: IO[str] | None = None

    # ---- the lock -----------------------------------------------------------------------------------
    def lock(self) -> DataDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.path.chmod(0o700)  # it holds API key values: the user's own, like ~/.ssh
            handle = (self.path / "lock").open("a+")
        except OSError as exc:
            raise DataDirError(f"cannot use {self.path} as the data directory: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataDirInUseError(
                f"{self.path} is in use by another pijobs up ({holder}): stop it, or pass another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._lock = handle
        self._check_format()
        return self

    def unlock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _check_format(self) -> None:
        version = self.state().get("format", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise DataDirError(
                f"{self.path} holds data in format {version}; this pijobs reads format {FORMAT_VERSION}"
            )

    # ---- the files ----------------------------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    def _read_json(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            problem = f"{self.path / name} cannot be read ({exc}): move it aside to start afresh"
            raise DataDirError(problem) from None

    def state(self) -> dict[str, Any]:
        return dict(self._read_json("state.json", {}))

    def save_state(self, **values: Any) -> None:
        state = {**self.state(), **values, "format": FORMAT_VERSION}
        _write_atomically(self.path / "state.json", json.dumps(state, indent=2).encode())

    def saved_keys(self) -> list[SavedKey]:
        return [SavedKey(**entry) for entry in self._read_json("keys.json", [])]

    def save_keys(self, keys: Iterable[SavedKey]) -> None:
        entries = [key.__dict__ for key in keys]
        _write_atomically(self.path / "keys.json", json.dumps(entries, indent=2).encode())

    def results_manifest(self) -> dict[str, dict[str, Any]]:
        return dict(self._read_json("results.json", {}))

    def save_results_manifest(self, manifest: dict[str, dict[str, Any]]) -> None:
        _write_atomically(self.path / "results.json", json.dumps(manifest, indent=1).encode())

    def result_file(self, key: str) -> Path:
        """One flat file per object key (quoted, so no key can reach outside the directory)."""
        return self.results_dir / quote(key, safe="")

    def items(self) -> list[dict[str, Any]]:
        try:
            lines = (self.path / "table.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except ValueError as exc:
            raise DataDirError(f"{self.path / 'table.jsonl'} cannot be read ({exc})") from None

    def save_items(self, items: Iterable[dict[str, Any]]) -> None:
        data = "".join(json.dumps(item, sort_keys=True) + "\n" for item in items)
        _write_atomically(self.path / "table.jsonl", data.encode())


@dataclass(frozen=True)
class Resources:
    """The physical names of what is kept, in the primary stack of this run."""

    table: str
    results_bucket: str
    usage_plan_id: str
    queue_url: str


class Keeper:
    """Copies the stack's data into a ``DataDir`` (``save``, also every ``interval`` seconds in a thread)
    and back into a fresh stack (``restore``)."""

    def __init__(self, data_dir: DataDir, resources: Resources, client: Any, *, interval: float) -> None:
        self._dir = data_dir
        self._resources = resources
        self._client = client  # service name -> boto3 client
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._save_lock = threading.Lock()
        self._last_items: bytes | None = None
        self._last_keys: list[SavedKey] | None = None

    # ---- restore ------------------------------------------------------------------------------------
    def restore(self) -> dict[str, int]:
        """Put the saved keys, results and items into this run's stack; re-send the queued jobs."""
        keys = self._restore_keys()
        results = self._restore_results()
        items = self._dir.items()
        previous_bucket = self._dir.state().get("results_bucket")
        self._restore_items(items, previous_bucket)
        queued = self._requeue(items)
        jobs = sum(1 for item in items if "job_id" in item and "status" in item)
        counts = {"API keys": keys, "jobs": jobs, "result files": results, "jobs queued again": queued}
        fields = {what.replace(" ", "_"): n for what, n in counts.items()}
        log.info("data_restored", data_dir=str(self._dir.path), **fields)
        return counts

    def _restore_keys(self) -> int:
        apigw = self._client("apigateway")
        saved = self._dir.saved_keys()
        for key in saved:
            restore_api_key(apigw, self._resources.usage_plan_id, key)
        self._last_keys = saved
        return len(saved)

    def _restore_results(self) -> int:
        s3 = self._client("s3")
        manifest = self._dir.results_manifest()
        restored = 0
        for key, meta in manifest.items():
            path = self._dir.result_file(key)
            if not path.is_file():
                log.warning("result_file_missing", key=key)
                continue
            with path.open("rb") as body:
                s3.put_object(
                    Bucket=self._resources.results_bucket,
                    Key=key,
                    Body=body,
                    ContentType=meta.get("content_type") or "application/octet-stream",
                    Metadata=meta.get("metadata") or {},
                )
            restored += 1
        return restored

    def _restore_items(self, items: list[dict[str, Any]], previous_bucket: str | None) -> None:
        dynamodb = self._client("dynamodb")
        bucket = self._resources.results_bucket
        for start in range(0, len(items), 25):
            batch = [
                {"PutRequest": {"Item": _reindexed(_rebucketed(item, previous_bucket, bucket))}}
                for item in items[start : start + 25]
            ]
            request: dict[str, Any] = {self._resources.table: batch}
            while request:
                response = dynamodb.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}

    def _requeue(self, items: list[dict[str, Any]]) -> int:
        """Queued jobs lost their message with the old queue: send each one again (the dispatcher ignores
        a message for a job that is no longer queued, so a duplicate costs nothing)."""

        queue = JobQueue(self._client("sqs"), self._resources.queue_url)
        sent = 0
        for item in items:
            if item.get("status", {}).get("S") == _QUEUED and "job_id" in item:
                function = item.get("function", {}).get("S") or "pi"
                queue.send(JobMessage(job_id=item["job_id"]["S"], function=function))
                sent += 1
        return sent

    # ---- save ---------------------------------------------------------------------------------------
    def save(self) -> None:
        """One copy of everything: keys, then results, then the table (a record never outruns its file)."""
        with self._save_lock:
            self._save_keys()
            self._save_results()
            self._save_items()
            self._dir.save_state(results_bucket=self._resources.results_bucket, saved_at=time.time())

    def _save_keys(self) -> None:
        keys = list(plan_keys(self._client("apigateway"), self._resources.usage_plan_id))
        if keys != self._last_keys:
            self._dir.save_keys(keys)
            self._last_keys = keys

    def _save_results(self) -> None:
        s3 = self._client("s3")
        manifest = self._dir.results_manifest()
        present: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self._resources.results_bucket):
            for obj in page.get("Contents", []):
                present[obj["Key"]] = obj["ETag"]
        self._dir.results_dir.mkdir(exist_ok=True)
        changed = False
        for key, etag in present.items():
            if manifest.get(key, {}).get("etag") == etag:
                continue
            try:
                response = s3.get_object(Bucket=self._resources.results_bucket, Key=key)
            except s3.exceptions.NoSuchKey:
                continue  # deleted since the listing
            _write_atomically(self._dir.result_file(key), response["Body"].read())
            manifest[key] = {
                "etag": etag,
                "content_type": response.get("ContentType"),
                "metadata": response.get("Metadata") or {},
            }
            changed = True
        for key in set(manifest) - set(present):
            with contextlib.suppress(FileNotFoundError):
                self._dir.result_file(key).unlink()
            del manifest[key]
            changed = True
        if changed:
            self._dir.save_results_manifest(manifest)

    def _save_items(self) -> None:
        items: list[dict[str, Any]] = []
        paginator = self._client("dynamodb").get_paginator("scan")
        for page in paginator.paginate(TableName=self._resources.table, ConsistentRead=True):
            items.extend(page.get("Items", []))
        data = "".join(json.dumps(item, sort_keys=True) + "\n" for item in items).encode()
        if data != self._last_items:
            _write_atomically(self._dir.path / "table.jsonl", data)
            self._last_items = data

    # ---- the thread ---------------------------------------------------------------------------------
    def start(self) -> Keeper:
        self._thread = threading.Thread(target=self._loop, name="data-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and save once more; never started (the start failed), save nothing: a half
        restored stack must not overwrite the directory it came from."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=30)
        self._thread = None
        self.save()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.save()
            except Exception as exc:  # moto busy or a disk hiccup: the next round tries again
                log.warning("data_save_failed", data_dir=str(self._dir.path), error=repr(exc))


def _reindexed(item: dict[str, Any]) -> dict[str, Any]:
    """An item as this version keeps it: a live job saved by an older one joins the live index, a finished
    one the finished index, and the capacity item forgets the last run's admission tick (it died with the
    old queue)."""

    if item.get("pk") == CAPACITY_KEY["pk"]:
        return {k: v for k, v in item.items() if k != "tick_at"}
    status, job_id = item.get("status", {}).get("S"), item.get("job_id", {}).get("S")
    is_job = item.get("pk", {}).get("S", "").startswith("job#")  # not a job's state-change event
    if not is_job or not job_id or status not in JobStatus.__members__:
        return item
    if not JobStatus(status).is_terminal:
        return {**item, LIVE_SHARD: {"S": str(shard_of(job_id))}}
    if "finished_at" in item and DONE_SHARD not in item:
        return {**item, DONE_SHARD: {"S": str(shard_of(job_id))}}
    return item


def _rebucketed(item: dict[str, Any], old: str | None, new: str) -> dict[str, Any]:
    """A job record names the bucket of its result; this run's results bucket has a new name."""
    result = item.get("result", {}).get("M")
    if not old or old == new or not result or result.get("bucket", {}).get("S") != old:
        return item
    return {**item, "result": {"M": {**result, "bucket": {"S": new}}}}


def plan_keys(apigw: Any, usage_plan_id: str) -> Iterable[SavedKey]:
    """The keys attached to the usage plan, with their values (the local stack's own; never on AWS)."""
    on_plan: set[str] = set()
    for page in apigw.get_paginator("get_usage_plan_keys").paginate(usagePlanId=usage_plan_id):
        on_plan.update(item["id"] for item in page.get("items", []))
    for page in apigw.get_paginator("get_api_keys").paginate(includeValues=True):
        for key in sorted(page.get("items", []), key=lambda k: k["id"]):
            if key["id"] in on_plan and key.get("value"):
                yield SavedKey(key["id"], key.get("name") or "", key["value"], bool(key.get("enabled")))


def restore_api_key(apigw: Any, usage_plan_id: str, key: SavedKey) -> None:
    """Create ``key`` again under its old id (moto's id manager lets the in-process server be told the id)."""
    from moto.apigateway.utils import ApigwApiKeyIdentifier
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.utilities.id_generator import moto_id_manager

    region = apigw.meta.region_name
    identifier = ApigwApiKeyIdentifier(DEFAULT_ACCOUNT_ID, region, key.value)
    moto_id_manager.set_custom_id(identifier, key.key_id)
    try:
        created = apigw.create_api_key(name=key.name, enabled=key.enabled, value=key.value)
    finally:
        moto_id_manager.unset_custom_id(identifier)
    if created["id"] != key.key_id:
        raise DataDirError(f"API key {key.key_id} came back as {created['id']}: its jobs would be lost")
    apigw.create_usage_plan_key(usagePlanId=usage_plan_id, keyId=key.key_id, keyType="API_KEY")
