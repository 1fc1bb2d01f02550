"""Uploads under moto: the API's records and presigned POSTs, the verifier's decisions, and jobs pinning
their inputs from the records (the handlers themselves, the real adapters, moto's DynamoDB and S3)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
import requests

import pijobs.dispatcher.verifier
from pijobs.dispatcher.verifier import Verdict, verify_object
from pijobs.shared.inputs import UploadStatus, upload_key
from pijobs.shared.models import utcnow
from pijobs.shared.uploads import UploadStore, checksum_header
from tests.integration.conftest import Cloud
from tests.integration.replica import LaggingReplica

CSV = b"city,amount\nOslo,3\nLima,5\nOslo,4\n"
SHA = hashlib.sha256(CSV).hexdigest()


def declare(cloud: Cloud, body: bytes = CSV, key_id: str = "key-a") -> dict[str, Any]:
    status, created, headers = cloud.api(
        "POST",
        "/uploads",
        {"filename": "t.csv", "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()},
        key_id=key_id,
    )
    assert status == 201, created
    assert headers["Location"].endswith(f"/uploads/{created['upload_id']}")
    return created


def send(created: dict[str, Any], content: bytes) -> None:
    answer = requests.post(created["url"], data=created["fields"], files={"file": content}, timeout=10)
    assert answer.status_code == 204, answer.text


def verify(cloud: Cloud, created: dict[str, Any], key_id: str = "key-a") -> Verdict:
    """What the S3 event does: the verifier on the upload's object."""
    return verify_object(
        pijobs.dispatcher.verifier.services(), cloud.bucket, upload_key(key_id, created["upload_id"])
    )


def upload(cloud: Cloud, upload_id: str, key_id: str = "key-a") -> dict[str, Any]:
    status, view, _ = cloud.api("GET", f"/uploads/{upload_id}", key_id=key_id)
    assert status == 200, view
    return view


def object_exists(cloud: Cloud, key: str) -> bool:
    return bool(cloud.s3.list_objects_v2(Bucket=cloud.bucket, Prefix=key).get("KeyCount"))


def sql_job(cloud: Cloud, upload_id: str, key_id: str = "key-a") -> tuple[int, dict[str, Any]]:
    params = {"query": "SELECT * FROM t", "inputs": {"t": upload_id}}
    status, body, _ = cloud.api("POST", "/jobs", {"function": "sql", "params": params}, key_id=key_id)
    return status, body


def test_a_declared_upload_is_pending_with_a_post_for_exactly_that_file_under_the_owners_prefix(
    cloud: Cloud,
) -> None:
    created = declare(cloud)

    fields = created["fields"]
    assert fields["key"] == upload_key("key-a", created["upload_id"])
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert ["content-length-range", len(CSV), len(CSV)] in policy["conditions"]
    assert {"x-amz-checksum-sha256": checksum_header(SHA)} in policy["conditions"]
    assert {"x-amz-checksum-algorithm": "SHA256"} in policy["conditions"]
    assert fields["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(CSV).digest()).decode()
    view = upload(cloud, created["upload_id"])
    assert (view["status"], view["bytes"], view["sha256"], view["filename"]) == (
        "PENDING",
        len(CSV),
        SHA,
        "t.csv",
    )
    assert view["verified_at"] is None and view["reason"] is None and view["expires_at"] > view["created_at"]


BAD_DECLARATIONS = [
    ({"filename": "t.csv", "bytes": 6 << 30, "sha256": SHA}, "bytes"),  # over the 5 GiB default
    ({"filename": "t.csv", "bytes": 0, "sha256": SHA}, "bytes"),
    ({"filename": "t.csv", "bytes": "12", "sha256": SHA}, "bytes"),
    ({"filename": "t.csv", "bytes": 12, "sha256": "abc"}, "sha256"),
    ({"filename": "../etc/passwd", "bytes": 12, "sha256": SHA}, "filename"),
    ({"filename": "t.csv", "bytes": 12, "sha256": SHA, "key": "uploads/key-b/x"}, "key"),
    ({"bytes": 12, "sha256": SHA}, "filename"),
]


def test_a_bad_declaration_is_a_422_naming_the_field(cloud: Cloud) -> None:
    for body, field in BAD_DECLARATIONS:
        status, answer, _ = cloud.api("POST", "/uploads", body)

        assert status == 422, body
        assert [d["field"] for d in answer["error"]["details"]] == [field], body
        assert cloud.bucket not in json.dumps(answer)
    assert cloud.s3.list_objects_v2(Bucket=cloud.bucket).get("KeyCount") == 0


def test_the_size_limit_is_the_operators(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    import pijobs.api_handler.handler

    monkeypatch.setenv("PIJOBS_MAX_UPLOAD_BYTES", "10")
    pijobs.api_handler.handler.services.cache_clear()

    status, answer, _ = cloud.api("POST", "/uploads", {"filename": "t.csv", "bytes": 11, "sha256": SHA})

    assert status == 422
    assert answer["error"]["details"] == [{"field": "bytes", "problem": "must be at most 10 bytes"}]


def test_the_declared_file_becomes_available_once_and_a_repeat_event_changes_nothing(cloud: Cloud) -> None:
    created = declare(cloud)
    send(created, CSV)

    assert verify(cloud, created) is Verdict.AVAILABLE
    first = upload(cloud, created["upload_id"])
    assert verify(cloud, created) is Verdict.AVAILABLE  # the same event delivered twice

    assert first["status"] == "AVAILABLE" and first["verified_at"]
    assert upload(cloud, created["upload_id"]) == first


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            CSV.replace(b"5", b"6"),
            f"checksum mismatch: the file's sha256 is {hashlib.sha256(CSV.replace(b'5', b'6')).hexdigest()}",
        ),
        (CSV[:-3], f"size mismatch: {len(CSV) - 3} bytes arrived, {len(CSV)} were declared"),
        (CSV + b"x" * 5000, f"size mismatch: more than the {len(CSV)} bytes declared arrived"),
    ],
    ids=["tampered", "truncated", "longer"],
)
def test_another_file_is_rejected_with_its_reason_and_deleted(
    cloud: Cloud, content: bytes, reason: str
) -> None:
    created = declare(cloud)
    send(created, content)

    assert verify(cloud, created) is Verdict.REJECTED

    view = upload(cloud, created["upload_id"])
    assert view["status"] == "REJECTED" and view["reason"].startswith(reason)
    assert not object_exists(cloud, created["fields"]["key"])
    status, answer = sql_job(cloud, created["upload_id"])
    assert status == 422
    assert answer["error"]["details"] == [
        {"field": "params.inputs.t", "problem": "the upload is REJECTED, not AVAILABLE"}
    ]


def test_an_available_upload_whose_file_is_replaced_is_rejected(cloud: Cloud) -> None:
    created = declare(cloud)
    send(created, CSV)
    assert verify(cloud, created) is Verdict.AVAILABLE

    send(created, CSV.replace(b"Oslo", b"Rome"))  # the same POST again, another file of the same size

    assert verify(cloud, created) is Verdict.REJECTED
    assert upload(cloud, created["upload_id"])["status"] == "REJECTED"
    assert not object_exists(cloud, created["fields"]["key"])
    send(created, CSV)  # and once REJECTED, whatever arrives is deleted
    assert verify(cloud, created) is Verdict.DELETED and not object_exists(cloud, created["fields"]["key"])


def test_an_object_without_its_upload_record_is_deleted_and_other_keys_are_left_alone(cloud: Cloud) -> None:
    orphan = upload_key("key-a", "a" * 32)
    cloud.s3.put_object(Bucket=cloud.bucket, Key=orphan, Body=CSV)
    cloud.s3.put_object(Bucket=cloud.bucket, Key="results/x/result.csv", Body=CSV)
    services = pijobs.dispatcher.verifier.services()

    assert verify_object(services, cloud.bucket, orphan) is Verdict.DELETED
    assert verify_object(services, cloud.bucket, "results/x/result.csv") is Verdict.SKIPPED
    assert verify_object(services, "another-bucket", upload_key("key-a", "b" * 32)) is Verdict.SKIPPED
    assert not object_exists(cloud, orphan) and object_exists(cloud, "results/x/result.csv")


def test_the_handler_reads_s3_events_and_ignores_the_test_event(cloud: Cloud) -> None:
    created = declare(cloud)
    send(created, CSV)
    key = created["fields"]["key"].replace("/", "%2F")  # S3 sends keys URL-encoded
    created_event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Post",
                "s3": {"bucket": {"name": cloud.bucket}, "object": {"key": key}},
            }
        ]
    }
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": cloud.bucket}
    records = [
        {"messageId": "1", "body": json.dumps(test_event)},
        {"messageId": "2", "body": json.dumps(created_event)},
        {"messageId": "3", "body": "not json"},
    ]

    answer = pijobs.dispatcher.verifier.lambda_handler({"Records": records}, None)

    assert answer == {"batchItemFailures": []}
    assert upload(cloud, created["upload_id"])["status"] == "AVAILABLE"


def test_a_verification_that_fails_is_retried_by_the_queue(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = declare(cloud)
    send(created, CSV)
    monkeypatch.setenv("PIJOBS_TABLE_NAME", "no-such-table")
    pijobs.dispatcher.verifier.services.cache_clear()
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Post",
                "s3": {"bucket": {"name": cloud.bucket}, "object": {"key": created["fields"]["key"]}},
            }
        ]
    }

    answer = pijobs.dispatcher.verifier.lambda_handler(
        {"Records": [{"messageId": "m", "body": json.dumps(event)}]}, None
    )

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m"}]}


def test_a_job_pins_an_available_upload_of_its_owner_and_refuses_anything_else(cloud: Cloud) -> None:
    available, pending = declare(cloud), declare(cloud)
    send(available, CSV)
    verify(cloud, available)

    status, accepted = sql_job(cloud, available["upload_id"])
    refused_pending = sql_job(cloud, pending["upload_id"])
    refused_other = sql_job(cloud, available["upload_id"], key_id="key-b")

    assert status == 202, accepted
    pinned = cloud.job(accepted["job_id"]).inputs
    assert pinned is not None and pinned["t"].model_dump() == {
        "upload_id": available["upload_id"],
        "key": upload_key("key-a", available["upload_id"]),
        "bytes": len(CSV),
        "sha256": SHA,
    }
    assert refused_pending[0] == 422
    assert refused_pending[1]["error"]["details"][0]["problem"] == "the upload is PENDING, not AVAILABLE"
    assert refused_other == (
        422,
        {
            "error": {
                "code": "validation_error",
                "message": "an input cannot be used",
                "details": [{"field": "params.inputs.t", "problem": "no such upload"}],
                "request_id": refused_other[1]["error"]["request_id"],
            }
        },
    )


def test_an_expired_upload_cannot_be_used(cloud: Cloud) -> None:
    created = declare(cloud)
    send(created, CSV)
    verify(cloud, created)
    store = UploadStore(cloud.ddb, cloud.table)
    record = store.get(created["upload_id"])
    assert record is not None and record.status is UploadStatus.AVAILABLE
    expired = record.model_copy(update={"expires_at": int((utcnow() - timedelta(seconds=1)).timestamp())})
    cloud.ddb.delete_item(TableName=cloud.table, Key={"pk": {"S": f"upload#{record.upload_id}"}})
    store.create(expired)

    status, answer = sql_job(cloud, created["upload_id"])

    assert status == 422
    assert answer["error"]["details"] == [
        {"field": "params.inputs.t", "problem": "the upload has expired: upload the file again"}
    ]


def test_uploads_list_newest_first_by_page_apart_from_jobs_and_tenants(cloud: Cloud) -> None:
    ids = [declare(cloud)["upload_id"] for _ in range(3)]
    declare(cloud, key_id="key-b")
    cloud.submit(10)

    _, first, _ = cloud.api("GET", "/uploads?limit=2")
    _, second, _ = cloud.api("GET", f"/uploads?limit=2&next={first['next']}")
    foreign = cloud.api("GET", f"/uploads?next={first['next']}", key_id="key-b")
    _, jobs, _ = cloud.api("GET", "/jobs")

    assert [u["upload_id"] for u in first["uploads"] + second["uploads"]] == ids[::-1]
    assert second["next"] is None
    assert foreign[0] == 422 and foreign[1]["error"]["details"][0]["field"] == "next"
    assert [j["function"] for j in jobs["jobs"]] == ["pi"]  # the jobs' own list shows no upload


def test_deleting_an_upload_removes_record_and_file_and_only_the_owner_may(cloud: Cloud) -> None:
    created = declare(cloud)
    send(created, CSV)
    verify(cloud, created)
    path = f"/uploads/{created['upload_id']}"

    foreign = cloud.api("DELETE", path, key_id="key-b")
    assert foreign[0] == 404 and object_exists(cloud, created["fields"]["key"])
    # another tenant cannot read it either: the same 404 as a missing upload, naming nothing of it
    theirs = cloud.api("GET", path, key_id="key-b")
    missing = cloud.api("GET", "/uploads/" + "0" * 32, key_id="key-b")
    assert (theirs[0], missing[0]) == (404, 404)
    for answer in (theirs[1], missing[1]):
        answer["error"].pop("request_id")
    assert theirs[1] == json.loads(json.dumps(missing[1]).replace("0" * 32, created["upload_id"]))

    status, deleted, _ = cloud.api("DELETE", path)

    assert status == 200 and deleted["status"] == "AVAILABLE"
    assert cloud.api("GET", path)[0] == 404 and cloud.api("DELETE", path)[0] == 404
    assert not object_exists(cloud, created["fields"]["key"])
    assert cloud.api("GET", "/uploads/not-an-id")[0] == 404


def test_an_object_under_another_owners_prefix_decides_nothing_and_is_deleted(cloud: Cloud) -> None:
    # Given alice's upload is declared, and an object with exactly her declared content appears under
    # another tenant's prefix, named with her upload's id
    created = declare(cloud)
    stray = upload_key("key-b", created["upload_id"])
    cloud.s3.put_object(Bucket=cloud.bucket, Key=stray, Body=CSV)

    # When the S3 event for that object reaches the verifier
    verdict = verify_object(pijobs.dispatcher.verifier.services(), cloud.bucket, stray)

    # Then the key in the event is not trusted: alice's upload stays PENDING and the object is gone
    assert verdict is Verdict.DELETED
    assert upload(cloud, created["upload_id"])["status"] == "PENDING"
    assert not object_exists(cloud, stray)
    # and her own file, sent to her own key, is still verified as usual
    send(created, CSV)
    assert verify(cloud, created) is Verdict.AVAILABLE


def test_an_event_s_other_records_and_unreadable_ones_do_not_hide_its_created_objects() -> None:
    """One notification may carry several records: a removal or a record missing its fields is passed
    over, and the objects created after it are still verified."""

    def created(key: str, name: str = "ObjectCreated:Post") -> dict[str, Any]:
        return {"eventName": name, "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}

    records = [
        created("uploads/key-a/one", name="ObjectRemoved:Delete"),
        {"eventName": "ObjectCreated:Put"},  # no s3 part
        {"eventName": "ObjectCreated:Put", "s3": None},
        created("uploads%2Fkey-a%2Ftwo"),
    ]

    found = pijobs.dispatcher.verifier.created_objects(json.dumps({"Records": records}))

    assert found == [("b", "uploads/key-a/two")]


def test_an_object_gone_before_its_event_is_read_decides_nothing(cloud: Cloud) -> None:
    """Deleted meanwhile (by its owner, or a later rejection): the event is done, the upload still waits."""
    created = declare(cloud)
    send(created, CSV)
    cloud.s3.delete_object(Bucket=cloud.bucket, Key=created["fields"]["key"])

    assert verify(cloud, created) is Verdict.SKIPPED
    assert upload(cloud, created["upload_id"])["status"] == "PENDING"


class DecidedMeanwhile:
    """The upload store as a concurrent delivery of the same event leaves it: the other delivery decides
    (to ``first``) just before this one does."""

    def __init__(self, store: UploadStore, first: UploadStatus) -> None:
        self.store, self.first, self.raced = store, first, False

    def get(self, upload_id: str) -> Any:
        return self.store.get(upload_id)

    def decide(self, upload_id: str, current: UploadStatus, target: UploadStatus, **fields: Any) -> Any:
        if not self.raced:
            self.raced = True
            extra = {"reason": "the other delivery's"} if self.first is UploadStatus.REJECTED else {}
            self.store.decide(upload_id, current, self.first, at=fields["at"], **extra)
        return self.store.decide(upload_id, current, target, **fields)


def test_a_wrong_file_another_delivery_rejected_first_is_still_deleted(cloud: Cloud) -> None:
    created = declare(cloud)
    send(created, CSV.replace(b"5", b"6"))
    real = pijobs.dispatcher.verifier.services()
    racing = dataclasses.replace(real, uploads=DecidedMeanwhile(real.uploads, UploadStatus.REJECTED))

    verdict = verify_object(racing, cloud.bucket, upload_key("key-a", created["upload_id"]))

    assert verdict is Verdict.DELETED and racing.uploads.raced
    assert upload(cloud, created["upload_id"])["status"] == "REJECTED"
    assert not object_exists(cloud, created["fields"]["key"])


def test_a_job_submitted_right_after_its_upload_was_verified_pins_it(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload is read consistently: a replica that has not yet seen the verification does not answer."""
    replica = LaggingReplica(monkeypatch)
    created = declare(cloud)
    send(created, CSV)
    replica.lag()

    assert verify(cloud, created) is Verdict.AVAILABLE
    status, body = sql_job(cloud, created["upload_id"])
    assert status == 202, body


def tamper(cloud: Cloud, item_key: str, **values: Any) -> None:
    """Changes attributes of an item in the table behind the API's back (a record corrupted or tampered
    with), each value as DynamoDB stores it (``{"N": "0"}``, ``{"S": ...}``)."""
    names = {f"#{name}": name for name in values}
    cloud.ddb.update_item(
        TableName=cloud.table,
        Key={"pk": {"S": item_key}},
        UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in values),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={f":{name}": value for name, value in values.items()},
    )


def test_a_one_byte_file_is_an_upload_a_job_can_pin(cloud: Cloud) -> None:
    created = declare(cloud, b"x")
    send(created, b"x")

    assert verify(cloud, created) is Verdict.AVAILABLE
    assert upload(cloud, created["upload_id"])["bytes"] == 1
    status, body = sql_job(cloud, created["upload_id"])
    assert status == 202, body
    assert cloud.job(body["job_id"]).inputs["t"].bytes == 1  # type: ignore[index]


def test_an_upload_record_whose_size_was_tampered_with_in_the_table_is_refused_when_read(
    cloud: Cloud,
) -> None:
    # Given a verified upload whose record's size was then set to 0 in the table (no declaration can say 0)
    created = declare(cloud)
    send(created, CSV)
    assert verify(cloud, created) is Verdict.AVAILABLE
    tamper(cloud, f"upload#{created['upload_id']}", bytes={"N": "0"})
    key = created["fields"]["key"]
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Post",
                "s3": {"bucket": {"name": cloud.bucket}, "object": {"key": key}},
            }
        ]
    }

    # Then no reader takes the record: the API answers an internal error that shows nothing of it, a job
    # naming it is not queued, and the verifier decides nothing (the event is given back to the queue)
    status, body, _ = cloud.api("GET", f"/uploads/{created['upload_id']}")
    assert status == 500 and body["error"]["code"] == "internal_error", body
    assert created["upload_id"] not in json.dumps(body) and cloud.bucket not in json.dumps(body)
    status, body = sql_job(cloud, created["upload_id"])
    assert status == 500 and body["error"]["code"] == "internal_error", body
    assert cloud.receive() == []
    answer = pijobs.dispatcher.verifier.lambda_handler(
        {"Records": [{"messageId": "m", "body": json.dumps(event)}]}, None
    )
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m"}]}
    assert object_exists(cloud, key)
    raw = cloud.ddb.get_item(TableName=cloud.table, Key={"pk": {"S": f"upload#{created['upload_id']}"}})
    assert raw["Item"]["status"] == {"S": "AVAILABLE"} and raw["Item"]["bytes"] == {"N": "0"}


def test_the_verifier_takes_only_the_object_its_upload_record_names(cloud: Cloud) -> None:
    # Given alice's declared upload, whose record was then changed to name another key under her prefix
    created = declare(cloud)
    send(created, CSV)
    tamper(cloud, f"upload#{created['upload_id']}", key={"S": upload_key("key-a", "c" * 32)})

    # When the event for the object she sent reaches the verifier
    verdict = verify(cloud, created)

    # Then that object is no upload's: deleted, and the record decides nothing (it stays PENDING)
    assert verdict is Verdict.DELETED
    assert UploadStore(cloud.ddb, cloud.table).get(created["upload_id"]).status is UploadStatus.PENDING  # type: ignore[union-attr]
    assert not object_exists(cloud, created["fields"]["key"])
