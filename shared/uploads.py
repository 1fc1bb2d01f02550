"""Customer uploads: their records in the jobs table and the checks that make one AVAILABLE.

An upload is one object under its owner's prefix (``pijobs.shared.inputs.upload_key``), sent by the customer
with a presigned POST, and one item ``pk = upload#<upload_id>`` in the jobs table. The item names its owner in
``uploader``, not ``owner``: the jobs' owner index (``owner`` + ``created_at``) must not list uploads, which
have their own sparse index (``uploader`` + ``created_at``). Its ``expires_at`` is the table's TTL attribute.

States: PENDING (nothing verified yet) -> AVAILABLE (pijobs read the object back: the declared size and
sha256) or REJECTED (with a reason; the object is deleted). An AVAILABLE upload whose object is replaced by
something else is REJECTED too. Every state change is a conditional write on the previous state.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from pijobs.shared.aws import conditional_write
from pijobs.shared.digest import Digest
from pijobs.shared.errors import NoSuchUploadError, StaleStatusError
from pijobs.shared.inputs import UploadRecord, UploadStatus
from pijobs.shared.models import from_dynamo, to_dynamo
from pijobs.shared.store import decode_token, encode_token

UPLOAD_ITEM_PREFIX = "upload#"
UPLOADS_INDEX = "uploads-index"
UPLOADER = "uploader"  # the owner's attribute on an upload item (see the module's docstring)
UPLOAD_TOKEN_KEYS = ("pk", UPLOADER, "created_at")
LIST_READS = 10

# Which state may follow which: a decision is final, but an AVAILABLE object found changed is REJECTED.
UPLOAD_TRANSITIONS: dict[UploadStatus, frozenset[UploadStatus]] = {
    UploadStatus.PENDING: frozenset({UploadStatus.AVAILABLE, UploadStatus.REJECTED}),
    UploadStatus.AVAILABLE: frozenset({UploadStatus.REJECTED}),
    UploadStatus.REJECTED: frozenset(),
}

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def upload_item_key(upload_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{UPLOAD_ITEM_PREFIX}{upload_id}"}}


def checksum_header(sha256_hex: str) -> str:
    """S3's ``x-amz-checksum-sha256``: the digest itself, base64 (not its hex)."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


# ---- verification (pure) -------------------------------------------------------------------------------
def rejection_reason(upload: UploadRecord, received: Digest) -> str | None:
    """None when the object is exactly what was declared; else why it is refused (for the customer)."""
    if received.truncated:
        return f"size mismatch: more than the {upload.bytes} bytes declared arrived"
    if received.bytes != upload.bytes:
        return f"size mismatch: {received.bytes} bytes arrived, {upload.bytes} were declared"
    if received.sha256 != upload.sha256:
        return f"checksum mismatch: the file's sha256 is {received.sha256}, {upload.sha256} was declared"
    return None


# ---- the store -----------------------------------------------------------------------------------------
def _record(item: dict[str, Any]) -> UploadRecord:
    data = from_dynamo({k: _DESERIALIZER.deserialize(v) for k, v in item.items()})
    return UploadRecord.model_validate({**data, "owner": data.get(UPLOADER, "")})


def _item(upload: UploadRecord) -> dict[str, Any]:
    data = upload.model_dump(mode="json", exclude_none=True)
    data[UPLOADER] = data.pop("owner")
    item = {k: _SERIALIZER.serialize(to_dynamo(v)) for k, v in data.items()}
    return {**item, **upload_item_key(upload.upload_id)}


class UploadStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def create(self, upload: UploadRecord) -> UploadRecord:
        self._ddb.put_item(
            TableName=self._table, Item=_item(upload), ConditionExpression="attribute_not_exists(pk)"
        )
        return upload

    def get(self, upload_id: str) -> UploadRecord | None:
        response = self._ddb.get_item(
            TableName=self._table, Key=upload_item_key(upload_id), ConsistentRead=True
        )
        return _record(response["Item"]) if "Item" in response else None

    def get_for_owner(self, upload_id: str, owner: str) -> UploadRecord:
        """Another owner's upload is indistinguishable from a missing one."""
        upload = self.get(upload_id)
        if upload is None or upload.owner != owner:
            raise NoSuchUploadError(f"no upload {upload_id}")
        return upload

    def get_many(self, upload_ids: Iterable[str]) -> dict[str, UploadRecord | None]:
        """Each upload by id (a job names at most a handful), read consistently."""
        return {upload_id: self.get(upload_id) for upload_id in sorted(set(upload_ids))}

    def list_for_owner(
        self, owner: str, *, limit: int, token: str | None = None
    ) -> tuple[list[UploadRecord], str | None]:
        """Newest first, ``limit`` a page, from the uploads index (only upload items carry ``uploader``)."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": UPLOADS_INDEX,
            "KeyConditionExpression": "#uploader = :owner",
            "ExpressionAttributeNames": {"#uploader": UPLOADER},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ScanIndexForward": False,
        }
        last = (
            decode_token(
                token, owner, keys=UPLOAD_TOKEN_KEYS, owner_attribute=UPLOADER, pk_prefix=UPLOAD_ITEM_PREFIX
            )
            if token
            else None
        )
        uploads: list[UploadRecord] = []
        for _ in range(LIST_READS):
            page = {**query, "Limit": limit - len(uploads)}
            if last:
                page["ExclusiveStartKey"] = last
            response = self._ddb.query(**page)
            uploads += [_record(item) for item in response.get("Items", [])]
            last = response.get("LastEvaluatedKey")
            if not last or len(uploads) >= limit:
                break
        return uploads, encode_token(last) if last else None

    def decide(
        self,
        upload_id: str,
        current: UploadStatus,
        target: UploadStatus,
        *,
        at: str,
        reason: str | None = None,
    ) -> UploadRecord:
        """``current -> target`` if allowed and the record is still ``current`` (else StaleStatusError)."""
        if target not in UPLOAD_TRANSITIONS[current]:
            raise ValueError(f"an upload cannot go from {current.value} to {target.value}")
        names = {"#status": "status", "#verified": "verified_at"}
        values: dict[str, Any] = {
            ":current": {"S": current.value},
            ":target": {"S": target.value},
            ":at": {"S": at},
        }
        expression = "SET #status = :target, #verified = :at"
        if reason is not None:
            names["#reason"] = "reason"
            values[":reason"] = {"S": reason}
            expression += ", #reason = :reason"
        response = conditional_write(
            lambda: self._ddb.update_item(
                TableName=self._table,
                Key=upload_item_key(upload_id),
                UpdateExpression=expression,
                ConditionExpression="#status = :current",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        )
        if response is None:
            raise StaleStatusError(f"upload {upload_id} is no longer {current.value}")
        return _record(response["Attributes"])

    def delete(self, upload_id: str, owner: str) -> UploadRecord:
        """Remove the caller's own upload record (NoSuchUploadError for anyone else's or a missing one)."""
        response = conditional_write(
            lambda: self._ddb.delete_item(
                TableName=self._table,
                Key=upload_item_key(upload_id),
                ConditionExpression="#uploader = :owner",
                ExpressionAttributeNames={"#uploader": UPLOADER},
                ExpressionAttributeValues={":owner": {"S": owner}},
                ReturnValues="ALL_OLD",
            )
        )
        if response is None:
            raise NoSuchUploadError(f"no upload {upload_id}")
        return _record(response["Attributes"])
