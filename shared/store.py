"""The DynamoDB job store: every status change is a conditional update on the previous status."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from pijobs.shared.aws import conditional_write, error_code
from pijobs.shared.errors import (
    IdempotencyConflictError,
    LinkedWriteRefusedError,
    NoSuchJobError,
    StaleStatusError,
    ValidationError,
)
from pijobs.shared.fairshare import INDEX_SHARDS, WaitingJob, shard_of
from pijobs.shared.models import JobRecord, isoformat, job_key, to_dynamo, utcnow
from pijobs.shared.status import JobStatus, ensure_transition

OWNER_INDEX = "owner-created-index"
# Sparse indexes (docs/scheduling.md): an item is in one only while it has the index's key attributes.
LIVE_INDEX = "live-index"  # every job not yet terminal, under ``live_shard``
WAITING_INDEX = (
    "waiting-index"  # every job parked for capacity, under ``wait_shard``, ordered by ``wait_tag``
)
FINISHED_INDEX = "finished-index"  # every terminal job, under ``done_shard``, ordered by ``finished_at``
LIVE_SHARD, WAIT_SHARD, WAIT_TAG = "live_shard", "wait_shard", "wait_tag"
DONE_SHARD = "done_shard"
METRICS_WATERMARK_KEY = {"pk": {"S": "metrics#finished"}}  # how far the reaper has counted finished jobs
LIST_READS = 10  # queries one page of a filtered list may take
FILTER_VALUES_MAX = 100  # DynamoDB's IN takes at most 100 operands
# Each read of a waiting-index partition whose jobs the filter left out evaluates this many times more items
# than the read before it, up to a page of WAITING_PAGE_MAX: a capped tenant's backlog ahead in tag order
# then hides no other tenant's job behind it short of some 5,000 of its jobs in one partition.
WAITING_READ_GROWTH = 4
WAITING_PAGE_MAX = 1000


_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def _ddb_value(value: Any) -> dict[str, Any]:
    return _SERIALIZER.serialize(to_dynamo(value))  # type: ignore[no-any-return]


def _python_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _DESERIALIZER.deserialize(v) for k, v in item.items()}


@dataclass(frozen=True)
class Append:
    """A field value for an update: ``items`` go on the end of the record's list (made if missing)."""

    items: list[Any]


class JobStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    @property
    def table_name(self) -> str:
        return self._table

    @staticmethod
    def serialize(item: dict[str, Any]) -> dict[str, Any]:
        """A plain item (a transaction's Put of another kind of item) in DynamoDB's typed form."""
        return {k: _ddb_value(v) for k, v in item.items()}

    # ---- reads ---------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        response = self._ddb.get_item(
            TableName=self._table, Key={"pk": {"S": job_key(job_id)}}, ConsistentRead=True
        )
        if "Item" not in response:
            raise NoSuchJobError(f"no job {job_id}")
        return JobRecord.from_item(_python_item(response["Item"]))

    def get_for_owner(self, job_id: str, owner: str) -> JobRecord:
        """Another owner's job is indistinguishable from a missing one."""
        job = self.get(job_id)
        if job.owner != owner:
            raise NoSuchJobError(f"no job {job_id}")
        return job

    def list_for_owner(
        self,
        owner: str,
        *,
        limit: int,
        token: str | None = None,
        function: str | None = None,
        status: JobStatus | None = None,
        name_contains: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first, ``limit`` a page; with ``function``, ``status`` or ``name_contains`` only the jobs
        that match them all (the filter runs after DynamoDB's limit, so short pages are read on until the
        page is full, the jobs end, or LIST_READS queries were made: a page may then be short, with a token
        to go on)."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ScanIndexForward": False,
        }
        conditions = []
        for attribute, value, condition in (
            ("function", function, "#function = :function"),
            ("status", status.value if status is not None else None, "#status = :status"),
            ("name", name_contains, "contains(#name, :name)"),
        ):
            if value is not None:
                conditions.append(condition)
                query["ExpressionAttributeNames"][f"#{attribute}"] = attribute
                query["ExpressionAttributeValues"][f":{attribute}"] = {"S": value}
        if conditions:
            query["FilterExpression"] = " AND ".join(conditions)
        last = decode_token(token, owner) if token else None
        jobs: list[JobRecord] = []
        for _ in range(LIST_READS):
            page = {**query, "Limit": limit - len(jobs)}
            if last:
                page["ExclusiveStartKey"] = last
            response = self._ddb.query(**page)
            jobs += [JobRecord.from_item(_python_item(item)) for item in response.get("Items", [])]
            last = response.get("LastEvaluatedKey")
            if not last or len(jobs) >= limit:
                break
        return jobs, encode_token(last) if last else None

    def live_jobs(self) -> list[JobRecord]:
        """Every job in a non-terminal state (for the reaper and the capacity recount), from the live index:
        its cost follows the live jobs, not every job ever stored. The index is eventually consistent: a job
        that changed a moment ago may show its previous state."""
        jobs: list[JobRecord] = []
        paginator = self._ddb.get_paginator("query")
        for shard in range(INDEX_SHARDS):
            pages = paginator.paginate(
                TableName=self._table,
                IndexName=LIVE_INDEX,
                KeyConditionExpression="#shard = :shard",
                ExpressionAttributeNames={"#shard": LIVE_SHARD},
                ExpressionAttributeValues={":shard": {"S": str(shard)}},
            )
            for page in pages:
                jobs.extend(JobRecord.from_item(_python_item(item)) for item in page.get("Items", []))
        return jobs

    def waiting_jobs(self, *, per_shard: int, skip_owners: frozenset[str] = frozenset()) -> list[WaitingJob]:
        """The parked jobs with the lowest tags, up to ``per_shard`` from each index partition, in tag order;
        ``skip_owners``' jobs are left out (tenants at their own cap). DynamoDB's ``Limit`` counts the items
        a read evaluates, before the filter: while the filter leaves them out, each read looks further
        (WAITING_READ_GROWTH)."""
        found: list[WaitingJob] = []
        for shard in range(INDEX_SHARDS):
            query: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": WAITING_INDEX,
                "KeyConditionExpression": "#shard = :shard",
                "ExpressionAttributeNames": {"#shard": WAIT_SHARD},
                "ExpressionAttributeValues": {":shard": {"S": str(shard)}},
            }
            skipped = sorted(skip_owners)[:FILTER_VALUES_MAX]
            if skipped:
                owners = {f":o{i}": {"S": owner} for i, owner in enumerate(skipped)}
                query["FilterExpression"] = f"NOT #owner IN ({', '.join(owners)})"
                query["ExpressionAttributeNames"]["#owner"] = "owner"
                query["ExpressionAttributeValues"].update(owners)
            shard_jobs: list[WaitingJob] = []
            for read in range(LIST_READS):
                limit = min(WAITING_PAGE_MAX, per_shard * WAITING_READ_GROWTH**read)
                response = self._ddb.query(**query, Limit=limit)
                for item in response.get("Items", []):
                    job = _python_item(item)
                    if job["owner"] not in skip_owners:
                        shard_jobs.append(WaitingJob(float(job[WAIT_TAG]), job["job_id"], job["owner"]))
                if len(shard_jobs) >= per_shard or "LastEvaluatedKey" not in response:
                    break
                query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
            found.extend(shard_jobs[:per_shard])
        return sorted(found)

    def waiting_by_owner(self) -> dict[str, int]:
        """How many jobs each tenant has parked (an operator's view: reads the whole waiting index)."""
        counts: dict[str, int] = {}
        paginator = self._ddb.get_paginator("query")
        for shard in range(INDEX_SHARDS):
            for page in paginator.paginate(
                TableName=self._table,
                IndexName=WAITING_INDEX,
                KeyConditionExpression="#shard = :shard",
                ExpressionAttributeNames={"#shard": WAIT_SHARD},
                ExpressionAttributeValues={":shard": {"S": str(shard)}},
            ):
                for item in page.get("Items", []):
                    owner = item["owner"]["S"]
                    counts[owner] = counts.get(owner, 0) + 1
        return counts

    def finished_between(self, after: str, until: str) -> list[dict[str, Any]]:
        """The jobs that finished in ``(after, until]`` (ISO times), from the finished index: its cost follows
        the jobs finished in that window, not every job stored. Each is ``{job_id, status, created_at,
        dispatched_at, started_at, finished_at}`` as far as the job has them. Eventually consistent: a job
        that finished a moment ago may not be there yet."""
        jobs: list[dict[str, Any]] = []
        paginator = self._ddb.get_paginator("query")
        for shard in range(INDEX_SHARDS):
            pages = paginator.paginate(
                TableName=self._table,
                IndexName=FINISHED_INDEX,
                KeyConditionExpression="#shard = :shard AND #finished BETWEEN :after AND :until",
                ExpressionAttributeNames={"#shard": DONE_SHARD, "#finished": "finished_at"},
                ExpressionAttributeValues={
                    ":shard": {"S": str(shard)},
                    ":after": {"S": after},
                    ":until": {"S": until},
                },
            )
            for page in pages:
                items = (_python_item(item) for item in page.get("Items", []))
                jobs.extend(item for item in items if item["finished_at"] > after)
        return sorted(jobs, key=lambda job: str(job["finished_at"]))

    def advance_metrics_watermark(self, until: str, *, start: str) -> str | None:
        """Claim the window of finished jobs from the watermark (``start`` the first time) to ``until`` and
        move the watermark there; None when there is nothing new or another sweep claimed it first. So each
        finished job is counted in one sweep's metrics, however the sweeps overlap."""
        item = self._ddb.get_item(TableName=self._table, Key=METRICS_WATERMARK_KEY, ConsistentRead=True).get(
            "Item"
        )
        previous = item["through"]["S"] if item else None
        if previous is not None and previous >= until:
            return None
        values = {":until": {"S": until}}
        condition = "attribute_not_exists(pk)"
        if previous is not None:
            values[":previous"] = {"S": previous}
            condition = "#through = :previous"
        claimed = conditional_write(
            lambda: self._ddb.update_item(
                TableName=self._table,
                Key=METRICS_WATERMARK_KEY,
                UpdateExpression="SET #through = :until",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#through": "through"},
                ExpressionAttributeValues=values,
            )
        )
        return None if claimed is None else previous or start

    def is_anyone_waiting(self) -> bool:
        return any(
            self._ddb.query(
                TableName=self._table,
                IndexName=WAITING_INDEX,
                KeyConditionExpression="#shard = :shard",
                ExpressionAttributeNames={"#shard": WAIT_SHARD},
                ExpressionAttributeValues={":shard": {"S": str(shard)}},
                Limit=1,
            ).get("Items")
            for shard in range(INDEX_SHARDS)
        )

    # ---- writes --------------------------------------------------------------------------------------
    @staticmethod
    def item(job: JobRecord) -> dict[str, Any]:
        """A new job's item as ``create`` writes it, with the attributes that put it in the live index and,
        parked, the waiting index."""
        item = {k: _ddb_value(v) for k, v in job.to_item().items()}
        if not job.status.is_terminal:
            item[LIVE_SHARD] = {"S": str(shard_of(job.job_id))}
        if job.wait_tag is not None:
            item[WAIT_SHARD] = {"S": str(shard_of(job.job_id))}
        return item

    def create(
        self,
        job: JobRecord,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        linked: tuple[dict[str, Any], ...] = (),
    ) -> JobRecord:
        """Write a new QUEUED job (parked if it has a ``wait_tag``); with an idempotency key, atomically with
        the key's claim; with ``linked`` items (its tenant's last tag), atomically with those too
        (LinkedWriteRefusedError if one of them refuses its condition).

        A repeat of the same key by the same owner returns the first job instead of creating another.
        """
        put_job = {
            "Put": {
                "TableName": self._table,
                "Item": self.item(job),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        if idempotency_key is None and not linked:
            self._ddb.put_item(**put_job["Put"])
            return job
        if idempotency_key is None:
            self._transact_linked([put_job, *linked])
            return job
        claim = {
            "Put": {
                "TableName": self._table,
                "Item": {
                    "pk": {"S": idempotency_item_key(job.owner, idempotency_key)},
                    "job_id": {"S": job.job_id},
                    "fingerprint": {"S": fingerprint},
                    "expires_at": {"N": str(job.expires_at or 0)},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        try:
            self._ddb.transact_write_items(TransactItems=[claim, put_job, *linked])
        except Exception as exc:
            if error_code(exc) not in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                raise
            reasons = cancellation_reasons(exc)
            if reasons[:1] != ["ConditionalCheckFailed"] and "ConditionalCheckFailed" in reasons[2:]:
                raise LinkedWriteRefusedError("a linked write refused the new job") from exc
            return self._existing_for_key(job.owner, idempotency_key, fingerprint)
        return job

    def _transact_linked(self, items: list[dict[str, Any]]) -> None:
        try:
            self._ddb.transact_write_items(TransactItems=items)
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = cancellation_reasons(exc)
            if "ConditionalCheckFailed" in reasons[1:]:
                raise LinkedWriteRefusedError("a linked write refused the new job") from exc
            raise

    def forget_idempotency_key(self, owner: str, idempotency_key: str) -> None:
        self._ddb.delete_item(
            TableName=self._table, Key={"pk": {"S": idempotency_item_key(owner, idempotency_key)}}
        )

    def _existing_for_key(self, owner: str, idempotency_key: str, fingerprint: str) -> JobRecord:
        response = self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": idempotency_item_key(owner, idempotency_key)}},
            ConsistentRead=True,
        )
        claim = _python_item(response.get("Item", {}))
        if not claim:
            raise IdempotencyConflictError("the idempotency key is being used by a request in progress")
        if claim.get("fingerprint") != fingerprint:
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used with a different request body",
                details=[{"field": "Idempotency-Key", "problem": "reused with a different body"}],
            )
        return self.get(str(claim["job_id"]))

    def transition(
        self,
        job_id: str,
        current: JobStatus,
        target: JobStatus,
        *,
        linked: tuple[dict[str, Any], ...] = (),
        attempt: int | None = None,
        **fields: Any,
    ) -> JobRecord:
        """Move ``current -> target`` if the table allows it and the record is still ``current`` (and, with
        ``attempt``, still on that attempt). Callers go through shared/lifecycle.py, which adds the
        state-change event and the attempt's clean-up.

        ``linked`` are other transaction items (e.g. the capacity slot) written in the same transaction:
        all or nothing. If one of them refuses its condition, LinkedWriteRefusedError.
        """
        ensure_transition(current, target)
        now = isoformat(utcnow())
        updates: dict[str, Any] = {"status": target.value, "updated_at": now, **fields}
        # Any status change takes the job out of the waiting index (unless the caller parks it on the way, as
        # ``park_fields`` do); a terminal one out of the live index.
        updates.setdefault(WAIT_SHARD, None)
        updates.setdefault(WAIT_TAG, None)
        if target.is_terminal:
            updates.setdefault("finished_at", now)
            updates[LIVE_SHARD] = None
            updates[DONE_SHARD] = str(shard_of(job_id))
        if target is JobStatus.SUCCEEDED:
            updates.setdefault("error", None)  # an earlier attempt's error is not the job's outcome
        if not linked:
            return self._conditional_update(job_id, updates, expected=current, attempt=attempt)
        update = self._update_request(job_id, updates, expected=current, attempt=attempt)
        del update["ReturnValues"]
        try:
            self._ddb.transact_write_items(TransactItems=[{"Update": update}, *linked])
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = cancellation_reasons(exc)
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise StaleStatusError(f"job {job_id} is no longer {current.value}") from exc
            if "ConditionalCheckFailed" in reasons[1:]:
                raise LinkedWriteRefusedError(
                    f"a linked write refused {current.value} -> {target.value}"
                ) from exc
            raise
        return self.get(job_id)

    def park(self, job_id: str, tag: float, *, linked: tuple[dict[str, Any], ...] = ()) -> bool:
        """Put a QUEUED job in the waiting index under ``tag``, with ``linked`` items (its tenant's last tag)
        in the same transaction. False if the job is parked already or no longer QUEUED."""
        update = self._update_request(
            job_id,
            {**park_fields(job_id, tag), "message_at": None},
            expected=JobStatus.QUEUED,
        )
        del update["ReturnValues"]
        update["ConditionExpression"] += f" AND attribute_not_exists({WAIT_TAG})"
        try:
            self._ddb.transact_write_items(TransactItems=[{"Update": update}, *linked])
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = cancellation_reasons(exc)
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return False
            if "ConditionalCheckFailed" in reasons[1:]:
                raise LinkedWriteRefusedError(f"a linked write refused parking job {job_id}") from exc
            raise
        return True

    def update_fields(
        self, job_id: str, expected: JobStatus, *, attempt: int | None = None, **fields: Any
    ) -> JobRecord:
        """Write non-status fields (heartbeat, progress, stack id) only while the status is ``expected``
        (and, with ``attempt``, the record still on that attempt)."""
        return self._conditional_update(job_id, fields, expected=expected, attempt=attempt)

    def grant_channel(self, job_id: str, attempt: int, **fields: Any) -> bool:
        """Write an attempt's worker channel grant (``channel``, with ``fields``) while the job is
        PROVISIONING on ``attempt`` and no grant for that attempt exists yet: False if one does (a
        concurrent dispatch of the same attempt made it, and only that call knows its token) or the job
        moved on."""
        request = self._update_request(job_id, fields, expected=JobStatus.PROVISIONING, attempt=attempt)
        request["ConditionExpression"] += (
            " AND (attribute_not_exists(#channel) OR #channel.#attempt <> :attempt)"
        )
        request["ExpressionAttributeNames"] |= {"#channel": "channel", "#attempt": "attempt"}
        return conditional_write(lambda: self._ddb.update_item(**request)) is not None

    def _conditional_update(
        self, job_id: str, updates: dict[str, Any], *, expected: JobStatus, attempt: int | None = None
    ) -> JobRecord:
        request = self._update_request(job_id, updates, expected=expected, attempt=attempt)
        response = conditional_write(lambda: self._ddb.update_item(**request))
        if response is None:
            raise StaleStatusError(f"job {job_id} is no longer {expected.value}")
        return JobRecord.from_item(_python_item(response["Attributes"]))

    def _update_request(
        self, job_id: str, updates: dict[str, Any], *, expected: JobStatus, attempt: int | None = None
    ) -> dict[str, Any]:
        """An UpdateItem of ``updates`` (None removes a field) on the condition that the status is still
        ``expected`` (and the attempt ``attempt``); also a transaction's Update item, without ReturnValues."""
        names = {"#status": "status"}
        values: dict[str, Any] = {":expected": {"S": expected.value}}
        condition = "#status = :expected"
        if attempt is not None:
            names["#attempts"] = "attempts"
            values[":attempt"] = {"N": str(attempt)}
            condition += " AND #attempts = :attempt"
        sets: list[str] = []
        removes: list[str] = []
        for i, (field, value) in enumerate(updates.items()):
            names[f"#f{i}"] = field
            if value is None:
                removes.append(f"#f{i}")
                continue
            if isinstance(value, Append):
                values[f":v{i}"] = _ddb_value(value.items)
                values[":empty"] = {"L": []}
                sets.append(f"#f{i} = list_append(if_not_exists(#f{i}, :empty), :v{i})")
                continue
            if hasattr(value, "model_dump"):
                value = value.model_dump(mode="json")
            values[f":v{i}"] = _ddb_value(value)
            sets.append(f"#f{i} = :v{i}")
        expression = "SET " + ", ".join(sets) if sets else ""
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        return {
            "TableName": self._table,
            "Key": {"pk": {"S": job_key(job_id)}},
            "UpdateExpression": expression.strip(),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }


def cancellation_reasons(exc: Exception) -> list[str | None]:
    """Each transaction item's code (``ConditionalCheckFailed``, ``None``) from a TransactionCanceled."""
    return [r.get("Code") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]


def park_fields(job_id: str, tag: float) -> dict[str, Any]:
    """The fields that put a job in the waiting index under ``tag`` (with a transition back to QUEUED)."""
    return {WAIT_SHARD: str(shard_of(job_id)), WAIT_TAG: tag}


def idempotency_item_key(owner: str, key: str) -> str:
    return f"idem#{owner}#{key}"


def encode_token(last_key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(last_key, sort_keys=True).encode()).decode().rstrip("=")


TOKEN_MAX = 2048
TOKEN_KEYS = ("pk", "owner", "created_at")  # the owner index's ExclusiveStartKey: table key + index keys


def decode_token(
    token: str,
    owner: str,
    *,
    keys: tuple[str, ...] = TOKEN_KEYS,
    owner_attribute: str = "owner",
    pk_prefix: str = "job#",
) -> dict[str, Any]:
    """A ``next`` token back into the query's start key, refusing anything this API did not issue for
    ``owner``: exactly the key attributes (``keys``; the jobs' owner index by default), each a string, the
    owner the caller, the item one of ``pk_prefix``."""
    problem = [{"field": "next", "problem": "not a token this API issued"}]
    try:
        if len(token) > TOKEN_MAX:
            raise ValueError("too long")
        padded = token + "=" * (-len(token) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(key, dict) or sorted(key) != sorted(keys):
            raise ValueError("not a start key")
        if not all(
            isinstance(v, dict) and list(v) == ["S"] and isinstance(v["S"], str) for v in key.values()
        ):
            raise ValueError("not string attributes")
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValidationError("invalid pagination token", details=problem) from exc
    if key[owner_attribute]["S"] != owner or not key["pk"]["S"].startswith(pk_prefix):
        raise ValidationError("invalid pagination token", details=problem)
    return key  # type: ignore[no-any-return]
