"""The upload verifier: a second Lambda handler of the dispatcher package, fed by the uploads queue.

S3 sends an ObjectCreated event for every object written under ``uploads/`` to the uploads queue (the results
bucket's notification configuration); the queue's event source mapping calls ``lambda_handler``. For each
object the verifier streams it once, computing its size and sha256, and decides its upload:

- exactly what was declared: PENDING -> AVAILABLE;
- anything else: -> REJECTED with the reason (size or checksum mismatch), and the object is deleted;
- no upload record of that owner for the key (deleted meanwhile): the object is deleted;
- an upload already REJECTED: the object, sent again, is deleted.

An AVAILABLE upload whose object arrives again is read again: the same file changes nothing, another file
rejects the upload. So a duplicate or late event is harmless, and the verdict never rests on S3 having
enforced the POST policy (moto enforces none of it; on AWS this is defence in depth).
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

from structlog.contextvars import bind_contextvars

from pijobs.dispatcher.handler import BatchItemFailure, PartialBatchResponse
from pijobs.shared import aws
from pijobs.shared.digest import Digest, digest_chunks
from pijobs.shared.errors import StaleStatusError
from pijobs.shared.inputs import UploadStatus, parse_upload_key
from pijobs.shared.logs import clear_context, configure_logging, get_logger
from pijobs.shared.models import isoformat, utcnow
from pijobs.shared.settings import VerifierSettings
from pijobs.shared.uploads import UploadStore, rejection_reason
from pijobs.shared.wiring import Adapters

log = get_logger(__name__)

READ_CHUNK = 1 << 20
OBJECT_CREATED = "ObjectCreated:"


class Verdict(str, Enum):
    AVAILABLE = "AVAILABLE"  # the object is the declared file (newly, or again)
    REJECTED = "REJECTED"  # it is not: the upload is rejected and the object deleted
    DELETED = "DELETED"  # no upload wants it: deleted
    SKIPPED = "SKIPPED"  # not an upload's object, or gone already


@dataclass(frozen=True)
class VerifierServices:
    settings: VerifierSettings
    uploads: UploadStore
    s3: Any


@lru_cache(maxsize=1)
def services() -> VerifierServices:
    made = Adapters(VerifierSettings.from_env())
    return VerifierServices(made.settings, made.uploads, made.s3)


def lambda_handler(event: dict[str, Any], context: Any) -> PartialBatchResponse:
    configure_logging()
    failures: list[BatchItemFailure] = []
    for record in event.get("Records", []):
        clear_context()
        try:
            for bucket, key in created_objects(record.get("body", "")):
                verify_object(services(), bucket, key)
        except Exception:
            log.exception("upload_verify_failed", message_id=record.get("messageId"))
            failures.append(BatchItemFailure(itemIdentifier=record["messageId"]))
    return {"batchItemFailures": failures}


def created_objects(body: str) -> list[tuple[str, str]]:
    """(bucket, key) of each ObjectCreated record of an S3 event notification, keys decoded (S3 sends them
    URL-encoded). S3's test event and anything that is not an S3 event name none."""
    try:
        event = json.loads(body)
    except ValueError:
        log.warning("upload_event_unreadable")
        return []
    records = event.get("Records") if isinstance(event, dict) else None
    found = []
    for record in records if isinstance(records, list) else []:
        try:
            if not str(record["eventName"]).startswith(OBJECT_CREATED):
                continue
            bucket = str(record["s3"]["bucket"]["name"])
            key = urllib.parse.unquote_plus(str(record["s3"]["object"]["key"]))
        except (KeyError, TypeError):
            log.warning("upload_event_record_unreadable")
            continue
        found.append((bucket, key))
    return found


def verify_object(services: VerifierServices, bucket: str, key: str) -> Verdict:
    parsed = parse_upload_key(key)
    if bucket != services.settings.results_bucket or parsed is None:
        log.warning("upload_event_ignored", bucket=bucket, key=key)
        return Verdict.SKIPPED
    owner, upload_id = parsed
    bind_contextvars(upload_id=upload_id, owner=owner)
    upload = services.uploads.get(upload_id)
    if upload is None or upload.owner != owner or upload.key != key or upload.status is UploadStatus.REJECTED:
        _delete(services, key)
        log.info("upload_object_deleted", why="no upload takes it")
        return Verdict.DELETED
    received = _read(services, key, upload.bytes)
    if received is None:
        log.info("upload_object_gone")
        return Verdict.SKIPPED
    reason = rejection_reason(upload, received)
    try:
        if reason is None:
            if upload.status is UploadStatus.PENDING:
                services.uploads.decide(
                    upload_id, UploadStatus.PENDING, UploadStatus.AVAILABLE, at=isoformat(utcnow())
                )
            log.info("upload_verified", bytes=received.bytes)
            return Verdict.AVAILABLE
        services.uploads.decide(
            upload_id, upload.status, UploadStatus.REJECTED, at=isoformat(utcnow()), reason=reason
        )
    except StaleStatusError:
        # Another delivery decided meanwhile. The same file: nothing more to do. Another: decide again from
        # the record as it is now (REJECTED is final, so this ends).
        log.info("upload_decided_meanwhile")
        return Verdict.AVAILABLE if reason is None else verify_object(services, bucket, key)
    _delete(services, key)
    log.info("upload_rejected", reason=reason)
    return Verdict.REJECTED


def _read(services: VerifierServices, key: str, declared_bytes: int) -> Digest | None:
    """The object's size and sha256, streamed (None when it is gone)."""
    try:
        response = services.s3.get_object(Bucket=services.settings.results_bucket, Key=key)
    except Exception as exc:
        if aws.error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    body = response["Body"]
    try:
        return digest_chunks(body.iter_chunks(READ_CHUNK), limit=declared_bytes)
    finally:
        body.close()


def _delete(services: VerifierServices, key: str) -> None:
    services.s3.delete_object(Bucket=services.settings.results_bucket, Key=key)
