"""The pure parts of uploads: streaming checks, keys, S3 events, expiry, and the local wiring of events."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from pijobs.dispatcher.verifier import created_objects
from pijobs.local.moto_server import is_presigned_post, observed_request
from pijobs.local.stack import notification_configuration
from pijobs.shared import errors
from pijobs.shared.digest import Digest, digest_chunks
from pijobs.shared.inputs import UploadRecord, UploadStatus, parse_upload_key, pin_inputs, upload_key
from pijobs.shared.uploads import UPLOAD_TRANSITIONS, checksum_header, rejection_reason

BODY = b"a,b\n1,2\n"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record(**changes: object) -> UploadRecord:
    values: dict[str, object] = {
        "upload_id": "a" * 32,
        "owner": "key-a",
        "status": UploadStatus.AVAILABLE,
        "key": upload_key("key-a", "a" * 32),
        "bytes": len(BODY),
        "sha256": hashlib.sha256(BODY).hexdigest(),
        "expires_at": int((NOW + timedelta(days=7)).timestamp()),
    }
    return UploadRecord.model_validate({**values, **changes})


def test_the_checksum_field_is_the_digest_in_base64_not_its_hex() -> None:
    assert (
        checksum_header(hashlib.sha256(BODY).hexdigest())
        == base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    )


def test_the_declared_file_passes_and_each_difference_is_named() -> None:
    upload = record()

    exact = digest_chunks([BODY[:3], BODY[3:]], limit=len(BODY))
    short = digest_chunks([BODY[:-1]], limit=len(BODY))
    other = digest_chunks([BODY.upper()], limit=len(BODY))

    assert exact == Digest(len(BODY), upload.sha256) and rejection_reason(upload, exact) is None
    assert rejection_reason(upload, short) == f"size mismatch: {len(BODY) - 1} bytes arrived, 8 were declared"
    assert (rejection_reason(upload, other) or "").startswith("checksum mismatch: the file's sha256 is ")


def test_reading_stops_once_more_than_the_declared_size_arrived() -> None:
    read: list[int] = []

    def endless() -> object:
        while True:
            read.append(1)
            yield b"x" * 4

    received = digest_chunks(endless(), limit=10)  # type: ignore[arg-type]

    assert received.truncated and received.bytes == 12 and len(read) == 3
    assert (
        rejection_reason(record(bytes=10), received)
        == "size mismatch: more than the 10 bytes declared arrived"
    )


def test_a_decision_is_final_but_an_available_file_found_changed_is_rejected() -> None:
    assert UPLOAD_TRANSITIONS[UploadStatus.PENDING] == {UploadStatus.AVAILABLE, UploadStatus.REJECTED}
    assert UPLOAD_TRANSITIONS[UploadStatus.AVAILABLE] == {UploadStatus.REJECTED}
    assert not UPLOAD_TRANSITIONS[UploadStatus.REJECTED]


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        (upload_key("key-a", "a" * 32), ("key-a", "a" * 32)),
        ("uploads/key-a/" + "A" * 32, None),
        ("uploads/key-a/x/" + "a" * 32, None),
        ("uploads/../" + "a" * 32, None),
        ("results/key-a/" + "a" * 32, None),
        ("uploads//" + "a" * 32, None),
    ],
)
def test_only_an_uploads_own_key_names_an_owner_and_an_upload(key: str, parsed: object) -> None:
    assert parse_upload_key(key) == parsed


def test_s3_events_name_their_created_objects_decoded_and_nothing_else() -> None:
    created = {
        "Records": [
            {
                "eventName": "ObjectCreated:Post",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "uploads%2Fk%2Fx+y"}},
            },
            {
                "eventName": "ObjectRemoved:Delete",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "uploads/k/z"}},
            },
            {"eventName": "ObjectCreated:Put", "s3": {}},
        ]
    }

    assert created_objects(json.dumps(created)) == [("b", "uploads/k/x y")]
    assert created_objects(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    assert created_objects("[1, 2]") == [] and created_objects("{broken") == []


def test_an_expired_upload_is_refused_at_pinning() -> None:
    upload = record(expires_at=int(NOW.timestamp()))

    with pytest.raises(errors.ValidationError) as refused:
        pin_inputs({"t": upload.upload_id}, {upload.upload_id: upload}, owner="key-a", now=NOW)

    assert refused.value.details == [
        {"field": "params.inputs.t", "problem": "the upload has expired: upload the file again"}
    ]
    earlier = NOW - timedelta(seconds=1)
    assert pin_inputs({"t": upload.upload_id}, {upload.upload_id: upload}, owner="key-a", now=earlier)


def test_the_templates_notification_becomes_s3s_api_shape() -> None:
    declared = {
        "QueueConfigurations": [
            {
                "Event": "s3:ObjectCreated:*",
                "Queue": None,  # !GetAtt, unresolved by the loader
                "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}},
            }
        ]
    }

    assert notification_configuration(declared, "arn:q") == {
        "QueueConfigurations": [
            {
                "QueueArn": "arn:q",
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}},
            }
        ]
    }


def test_a_presigned_post_is_observed_without_reading_its_body() -> None:
    class Unreadable:
        def read(self, *args: object) -> bytes:
            raise AssertionError("the file is moto's to read")

    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "multipart/form-data; boundary=x",
        "CONTENT_LENGTH": "100",
        "wsgi.input": Unreadable(),
    }

    assert is_presigned_post(environ)
    assert observed_request(environ) == ("s3", "PostObject", {})
    assert not is_presigned_post({**environ, "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=x"})
    assert not is_presigned_post({**environ, "REQUEST_METHOD": "PUT"})


def test_a_dynamodb_request_is_observed_by_its_action_without_reading_its_body() -> None:
    class Unreadable:
        def read(self, *args: object) -> bytes:
            raise AssertionError("a DynamoDB request's body is moto's alone to read")

    signed = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, Signature=x"
    environ = {
        "REQUEST_METHOD": "POST",
        "HTTP_AUTHORIZATION": signed,
        "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.TransactWriteItems",
        "CONTENT_TYPE": "application/x-amz-json-1.0",
        "CONTENT_LENGTH": "100",
        "wsgi.input": Unreadable(),
    }

    assert observed_request(environ) == ("dynamodb", "TransactWriteItems", {})
    streams_read = {**environ, "HTTP_X_AMZ_TARGET": "DynamoDBStreams_20120810.GetRecords"}
    assert observed_request(streams_read) is None  # signed as dynamodb, but it only reads
