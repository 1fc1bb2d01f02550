"""The DynamoDB job store: every status change is a conditional update on the previous status."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from shared.aws import error_code
from shared.errors import IdempotencyConflictError, NoSuchJobError, StaleStatusError, ValidationError
from shared.models import JobRecord, from_dynamo, isoformat, job_key, to_dynamo, utcnow
from shared.status import JobStatus, ensure_transition

OWNER_INDEX = "owner-created-index"
LIST_READS = 10  # queries one page of a filtered list may take


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
        self, owner: str, *, limit: int, token: str | None = None, function: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first, ``limit`` a page; with ``function`` only that function's jobs (the filter runs after
        DynamoDB's limit, so short pages are read on until the page is full, the jobs end, or LIST_READS
        queries were made: a page may then be short, with a token to go on)."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ScanIndexForward": False,
        }
        if function is not None:
            query["FilterExpression"] = "#function = :function"
            query["ExpressionAttributeNames"]["#function"] = "function"
            query["ExpressionAttributeValues"][":function"] = {"S": function}
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
        """Every job in a non-terminal state (for the reaper and the capacity recount)."""
        jobs: list[JobRecord] = []
        paginator = self._ddb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self._table,
            FilterExpression="begins_with(pk, :job) AND #status IN (:q, :p, :r)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":job": {"S": "job#"},
                ":q": {"S": JobStatus.QUEUED.value},
                ":p": {"S": JobStatus.PROVISIONING.value},
                ":r": {"S": JobStatus.RUNNING.value},
            },
            ConsistentRead=True,
        )
        for page in pages:
            jobs.extend(JobRecord.from_item(_python_item(item)) for item in page.get("Items", []))
        return jobs

    # ---- writes --------------------------------------------------------------------------------------
    def create(
        self, job: JobRecord, *, idempotency_key: str | None = None, fingerprint: str = ""
    ) -> JobRecord:
        """Write a new QUEUED job; with an idempotency key, atomically with the key's claim.

        A repeat of the same key by the same owner returns the first job instead of creating another.
        """
        put_job = {
            "Put": {
                "TableName": self._table,
                "Item": {k: _ddb_value(v) for k, v in job.to_item().items()},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        if idempotency_key is None:
            self._ddb.put_item(**put_job["Put"])
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
            self._ddb.transact_write_items(TransactItems=[claim, put_job])
        except Exception as exc:
            if error_code(exc) not in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                raise
            return self._existing_for_key(job.owner, idempotency_key, fingerprint)
        return job

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

    def transition(self, job_id: str, current: JobStatus, target: JobStatus, **fields: Any) -> JobRecord:
        """Move ``current -> target`` if the table allows it and the record is still ``current``."""
        ensure_transition(current, target)
        now = isoformat(utcnow())
        updates: dict[str, Any] = {"status": target.value, "updated_at": now, **fields}
        if target.is_terminal:
            updates.setdefault("finished_at", now)
        if target is JobStatus.SUCCEEDED:
            updates.setdefault("error", None)  # an earlier attempt's error is not the job's outcome
        return self._conditional_update(job_id, updates, expected=current)

    def update_fields(self, job_id: str, expected: JobStatus, **fields: Any) -> JobRecord:
        """Write non-status fields (heartbeat, progress, stack id) only while the status is ``expected``."""
        return self._conditional_update(job_id, fields, expected=expected)

    def _conditional_update(self, job_id: str, updates: dict[str, Any], *, expected: JobStatus) -> JobRecord:
        names = {"#status": "status"}
        values: dict[str, Any] = {":expected": {"S": expected.value}}
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
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        try:
            response = self._ddb.update_item(
                TableName=self._table,
                Key={"pk": {"S": job_key(job_id)}},
                UpdateExpression=expression,
                ConditionExpression="#status = :expected",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise StaleStatusError(f"job {job_id} is no longer {expected.value}") from exc
            raise
        return JobRecord.from_item(_python_item(response["Attributes"]))


def idempotency_item_key(owner: str, key: str) -> str:
    return f"idem#{owner}#{key}"


def encode_token(last_key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(last_key, sort_keys=True).encode()).decode().rstrip("=")


def decode_token(token: str, owner: str) -> dict[str, Any]:
    problem = [{"field": "next", "problem": "not a token this API issued"}]
    try:
        padded = token + "=" * (-len(token) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        token_owner = from_dynamo(_python_item(key)).get("owner")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValidationError("invalid pagination token", details=problem) from exc
    if token_owner != owner:
        raise ValidationError("invalid pagination token", details=problem)
    return key  # type: ignore[no-any-return]
