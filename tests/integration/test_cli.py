"""The ``pijobs`` customer and operator commands, run in-process against the embedded local stack."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from pijobs import cli
from pijobs.local.stack import LocalConfig, LocalStack
from pijobs.ops import esm_settings
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.store import JobStore

pytestmark = [
    pytest.mark.e2e,
    # moto re-parses the primary template on DescribeStacks and warns about the resources it skips
    pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),
]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, wordcount_plugin: None) -> Iterator[LocalStack]:
    """The embedded stack, with the word-count plug-in (the commands' tests of a function other than pi)."""
    config = LocalConfig(max_active_stacks=2, log_dir=tmp_path_factory.mktemp("workers"))
    with LocalStack(config) as local:
        yield local


@pytest.fixture
def pijobs(stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``pijobs(*argv)`` runs the command as a customer of the local stack would, and returns what it said."""
    monkeypatch.setenv("PIJOBS_API_URL", stack.api_url)
    monkeypatch.setenv("PIJOBS_API_KEY", stack.api_key)
    monkeypatch.delenv("PIJOBS_STACK_NAME", raising=False)
    monkeypatch.setenv("COLUMNS", "80")  # an ordinary terminal: tables fit it

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@contextmanager
def dispatch_paused(stack: LocalStack) -> Iterator[None]:
    """Stop the local event source mapping so queued messages stay put; start it again after."""
    stack.esm.stop()
    try:
        yield
    finally:
        stack.esm.start()


def drain_queue(stack: LocalStack, queue_url: str) -> int:
    sqs = stack.client("sqs")
    drained = 0
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        drained += len(messages)
    return drained


# ---- customer commands ------------------------------------------------------------------------------------
def test_submit_json_prints_only_the_accepted_job(pijobs: Any, stack: LocalStack) -> None:
    with dispatch_paused(stack):
        run = pijobs("submit", "--digits", "50", "--name", "cli", "--json")
        assert run.code == 0, run.err
        accepted = run.json()
        assert accepted["status"] == "QUEUED" and accepted["job_id"]
        assert accepted["links"]["self"].endswith(f"/jobs/{accepted['job_id']}")
        assert pijobs("cancel", accepted["job_id"], "--json").code == 0


def test_functions_lists_the_catalog_for_people_and_scripts(pijobs: Any) -> None:
    human = pijobs("functions")
    scripted = pijobs("functions", "--json")

    assert human.code == 0 and "word-count" in human.out and "digits:integer" in human.out
    assert "text:string" in human.out and "top?:integer" in human.out
    names = [f["name"] for f in scripted.json()["functions"]]
    assert (
        names == ["pi", "sql", "word-count"] and scripted.json()["functions"][0]["limits"]["max_digits"] >= 1
    )


def test_submit_a_function_with_typed_params_then_download_its_result(pijobs: Any, tmp_path: Path) -> None:
    run = pijobs("submit", "word-count", "--param", "text=b a b 7", "--param", "top=2", "--wait", "--json")
    assert run.code == 0, run.err
    job = run.json()
    assert job["status"] == "SUCCEEDED" and job["params"]["top"] == 2 and job["params"]["text"] == "b a b 7"
    target = tmp_path / "counts.json"
    assert pijobs("result", job["job_id"], "-o", str(target)).code == 0
    assert json.loads(target.read_text())["top"] == [["b", 2], ["a", 1]]
    assert [j["job_id"] for j in pijobs("list", "--function", "word-count", "--json").json()["jobs"]] == [
        job["job_id"]
    ]
    listed = pijobs("list", "--status", "SUCCEEDED", "--name-contains", "nothing like it", "--json")
    assert listed.code == 0 and listed.json()["jobs"] == []
    assert pijobs("list", "--status", "finished").code == 1  # the API's 422, named
    from_json = pijobs("submit", "word-count", "--params-json", '{"text": "x", "top": 1}', "--wait", "--json")
    assert from_json.code == 0 and from_json.json()["result"]["metadata"] == {"words": 1, "distinct": 1}


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["submit"], 2, "name a function"),
        (["submit", "word-count", "--digits", "5"], 2, "--digits is pi's shorthand"),
        (["submit", "word-count", "--params-json", "[1]"], 2, "must be a JSON object"),
        (["submit", "word-count", "--params-json", "{"], 2, "not JSON"),
        (["submit", "word-count", "--param", "text"], 2, "KEY=VALUE"),
        (["submit", "word-count", "--param", "top=many", "--param", "text=a"], 1, "params.top"),
        (["submit", "nope", "--params-json", "{}"], 1, "function"),
    ],
)
def test_submit_says_what_is_wrong(pijobs: Any, argv: list[str], code: int, says: str) -> None:
    run = pijobs(*argv)
    assert run.code == code and says in run.err, run.err
    assert "Traceback" not in run.err


def test_status_list_and_cancel_a_queued_job(pijobs: Any, stack: LocalStack) -> None:
    with dispatch_paused(stack):
        ids = [pijobs("submit", "--digits", "60", "--json").json()["job_id"] for _ in range(3)]

        status = pijobs("status", ids[0], "--json")
        one_page = pijobs("list", "--limit", "1", "--json")
        every_page = pijobs("list", "--limit", "1", "--all", "--json")
        human = pijobs("list", "--limit", "2")
        cancelled = pijobs("cancel", ids[0], "--json")
        again = pijobs("cancel", ids[0])
        for job_id in ids[1:]:
            assert pijobs("cancel", job_id).code == 0

    assert (
        status.code == 0 and status.json()["status"] == "QUEUED" and status.json()["params"] == {"digits": 60}
    )
    assert len(one_page.json()["jobs"]) == 1 and one_page.json()["next"]
    listed = [job["job_id"] for job in every_page.json()["jobs"]]
    assert set(ids) <= set(listed) and every_page.json()["next"] is None
    assert listed.index(ids[2]) < listed.index(ids[0])  # newest first
    assert human.code == 0 and ids[2][:12] in human.out and "QUEUED" in human.out and "--next" in human.err
    assert cancelled.code == 0 and cancelled.json()["status"] == "CANCELLED"
    assert again.code == 1 and "409" in again.err and "job_finished" in again.err
    assert pijobs("status", ids[0], "--json").json()["status"] == "CANCELLED"


def test_submit_wait_then_download_a_verified_result(pijobs: Any, stack: LocalStack, tmp_path: Path) -> None:
    waited = pijobs("submit", "--digits", "1000", "--wait", "--interval", "0.2", "--timeout", "120")
    assert waited.code == 0, waited.out + waited.err
    assert re.search(r"^status +SUCCEEDED$", waited.out, re.M) and re.search(r"^url +http", waited.out, re.M)
    job_id = waited.out.split()[waited.out.split().index("job_id") + 1]
    job = pijobs("status", job_id, "--json").json()
    target = tmp_path / "pi.txt"

    fetched = pijobs("result", job_id, "-o", str(target))

    assert fetched.code == 0, fetched.err
    data = target.read_bytes()
    assert len(data) == job["result"]["bytes"]
    assert hashlib.sha256(data).hexdigest() == job["result"]["sha256"]
    digits = data.decode().splitlines()[-1]
    assert digits.startswith("3.14159265358979") and len(digits) == 2 + 1000

    # Given the stored object no longer matches the record, the download is refused and nothing is written.
    stored = JobStore(stack.client("dynamodb"), stack.outputs["TableName"]).get(job["job_id"]).result
    assert stored is not None and stored.filename == job["result"]["filename"] == "pi-1000.txt"
    stack.client("s3").put_object(Bucket=stack.outputs["ResultsBucket"], Key=stored.key, Body=b"x")
    tampered = tmp_path / "tampered.txt"
    refused = pijobs("result", job_id, "-o", str(tampered))
    assert refused.code == 1 and "does not match" in refused.err
    assert not tampered.exists() and not list(tmp_path.glob("*.part"))


def test_result_of_a_job_without_one_exits_one(pijobs: Any, stack: LocalStack) -> None:
    with dispatch_paused(stack):
        job_id = pijobs("submit", "--digits", "70", "--json").json()["job_id"]
        pijobs("cancel", job_id)
    run = pijobs("result", job_id)
    assert run.code == 1 and "CANCELLED" in run.err and "no result" in run.err


def test_api_errors_exit_one_with_code_and_fields(pijobs: Any) -> None:
    invalid = pijobs("submit", "--digits", "0")
    missing = pijobs("status", "no-such-job", "--json")
    wrong_key = pijobs("status", "x", "--api-key", "not-a-key")

    assert invalid.code == 1 and "422 validation_error" in invalid.err and "digits:" in invalid.err
    assert missing.code == 1 and "404" in missing.err
    assert missing.json()["error"]["code"] == "not_found"  # --json: the API's error body on stdout
    assert wrong_key.code == 1 and "403" in wrong_key.err


def test_missing_api_key_is_a_usage_error(pijobs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIJOBS_API_KEY")
    run = pijobs("submit", "--digits", "10", "--json")
    assert run.code == 2 and "no API key" in run.err and "PIJOBS_API_KEY" in run.err
    assert run.out == ""


# ---- operator commands ------------------------------------------------------------------------------------
def test_ops_status_shows_queue_jobs_capacity_and_mapping(pijobs: Any, stack: LocalStack) -> None:
    with dispatch_paused(stack):
        ids = [pijobs("submit", "--digits", "80", "--json").json()["job_id"] for _ in range(2)]
        status = pijobs("ops", "status", "--json")
        human = pijobs("ops", "status")
        for job_id in ids:
            pijobs("cancel", job_id)

    assert status.code == 0, status.err
    report = status.json()
    assert report["queue"]["visible"] + report["queue"]["in_flight"] >= 2
    assert report["live_jobs"]["QUEUED"] >= 2
    assert report["capacity"]["max_active_stacks"] == 2
    assert report["event_source_mapping"]["batch_size"] == stack.config.batch_size
    assert report["event_source_mapping"]["maximum_concurrency"] == stack.config.maximum_concurrency
    assert report["dead_letter_queue"]["url"] == stack.outputs["DeadLetterQueueUrl"]
    assert human.code == 0 and "MaxActiveStacks 2" in human.out and "MaximumConcurrency" in human.out


def test_ops_status_watch_draws_the_live_view_until_its_last_iteration(
    pijobs: Any, stack: LocalStack
) -> None:
    done = pijobs("submit", "--digits", "60", "--wait", "--json")
    assert done.code == 0, done.err
    idle_key_id, _ = stack.create_api_key("idle-tenant-with-a-setting")
    assert pijobs("ops", "tenant", idle_key_id, "--weight", "3").code == 0
    with dispatch_paused(stack):
        ids = [pijobs("submit", "--digits", "70", "--json").json()["job_id"] for _ in range(2)]
        watch = pijobs("ops", "status", "--watch", "--iterations", "2", "--interval", "0.1")
        for job_id in ids:
            pijobs("cancel", job_id)

    assert watch.code == 0, watch.err
    assert "pijobs stack pijobs at" in watch.out and "dead-letter queue" in watch.out
    assert "of MaxActiveStacks 2" in watch.out and "/2 stacks" in watch.out
    waiting = next(line for line in watch.out.splitlines() if line.split()[:1] == [stack.api_key_id])
    assert int(waiting.split()[-1]) >= 2  # the default key's jobs, parked at submit
    assert idle_key_id not in watch.out  # a setting alone is not usage: the watch does not scan for it
    assert "completed, per 60 s over 30 min" in watch.out
    states = next(line for line in watch.out.splitlines() if "SUCCEEDED" in line and "TIMED_OUT" in line)
    assert int(states.split("SUCCEEDED ")[1].split(",")[0]) >= 1  # the job above, from the finished index


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--watch", "--json"], "--watch draws a view"),
        (["--iterations", "2"], "--iterations goes with --watch"),
    ],
)
def test_ops_status_watch_refuses_what_it_cannot_do(pijobs: Any, argv: list[str], says: str) -> None:
    run = pijobs("ops", "status", *argv)
    assert run.code == 2 and says in run.err


@pytest.mark.parametrize("argv", [["--interval", "0"], ["--interval", "x"], ["--iterations", "0"]])
def test_ops_status_watch_refuses_out_of_range_values(pijobs: Any, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pijobs("ops", "status", "--watch", *argv)
    assert exit_info.value.code == 2


def test_ops_tenant_sets_weight_and_cap_and_ops_tenants_shows_them(pijobs: Any, stack: LocalStack) -> None:
    key_id, _ = stack.create_api_key("tenant-under-test")

    changed = pijobs("ops", "tenant", key_id, "--weight", "2.5", "--max-active", "1", "--json")
    listed = pijobs("ops", "tenants", "--json")
    human = pijobs("ops", "tenants")
    back = pijobs("ops", "tenant", key_id, "--default-cap", "--json")
    nothing = pijobs("ops", "tenant", key_id)
    with pytest.raises(SystemExit) as bad:  # argparse's usage error
        pijobs("ops", "tenant", key_id, "--weight", "0")

    assert changed.code == 0, changed.err
    assert changed.json() == {
        "tenant": key_id,
        "weight": 2.5,
        "max_active": 1,
        "own_cap": True,
        "live_stacks": 0,
        "waiting": 0,
    }
    assert key_id in {row["tenant"] for row in listed.json()["tenants"]}
    assert human.code == 0 and key_id in human.out and "2.5" in human.out
    ddb, table = stack.client("dynamodb"), stack.outputs["TableName"]
    limit = CapacityCounter(ddb, table, default_limit=1).ensure()["limit"]
    assert back.json()["max_active"] == max(1, limit // 2) and back.json()["own_cap"] is False
    assert nothing.code == 2 and "nothing to change" in nothing.err
    assert bad.value.code == 2


def test_ops_set_changes_capacity_and_the_mapping(pijobs: Any, stack: LocalStack) -> None:
    mapping_id = stack.outputs["EventSourceMappingId"]
    try:
        changed = pijobs(
            "ops",
            "set",
            "--max-active-stacks",
            "3",
            "--maximum-concurrency",
            "4",
            "--batch-size",
            "7",
            "--json",
        )
        after = pijobs("ops", "status", "--json").json()
        settings = esm_settings(stack.client("lambda"), mapping_id)
        deadline = time.monotonic() + 10  # the running local mapping picks the change up, no restart
        while time.monotonic() < deadline and stack.esm.settings.batch_size != 7:
            time.sleep(0.2)
        live = stack.esm.settings
    finally:
        pijobs(
            "ops",
            "set",
            "--max-active-stacks",
            "2",
            "--maximum-concurrency",
            str(stack.config.maximum_concurrency),
            "--batch-size",
            str(stack.config.batch_size),
        )

    assert changed.code == 0, changed.err
    assert (live.batch_size, live.maximum_concurrency) == (7, 4)
    assert after["capacity"]["max_active_stacks"] == 3
    assert after["event_source_mapping"]["batch_size"] == 7
    assert after["event_source_mapping"]["maximum_concurrency"] == 4
    assert settings == {"batch_size": 7, "maximum_concurrency": 4}
    mapping = stack.client("lambda").get_event_source_mapping(UUID=mapping_id)
    assert mapping["State"] == "Disabled"  # the change must not wake moto's own consumer


@pytest.mark.parametrize(
    "argv",
    [
        ["--maximum-concurrency", "1"],
        ["--maximum-concurrency", "1001"],
        ["--batch-size", "0"],
        ["--batch-size", "10001"],
        ["--max-active-stacks", "0"],
    ],
)
def test_ops_set_refuses_out_of_range_values(pijobs: Any, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pijobs("ops", "set", *argv)
    assert exit_info.value.code == 2


def test_ops_set_needs_something_to_change_and_a_window_for_big_batches(pijobs: Any) -> None:
    nothing = pijobs("ops", "set")
    big = pijobs("ops", "set", "--batch-size", "20")
    assert nothing.code == 2 and "nothing to change" in nothing.err
    assert big.code == 2 and "MaximumBatchingWindowInSeconds" in big.err
    assert pijobs("ops", "status", "--json").json()["event_source_mapping"]["batch_size"] != 20


def test_dlq_list_redrive_and_purge(pijobs: Any, stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    queue_url, dlq_url = stack.outputs["QueueUrl"], stack.outputs["DeadLetterQueueUrl"]
    with dispatch_paused(stack):
        drain_queue(stack, queue_url)
        sent = sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody="{not a job",
            MessageAttributes={"job_id": {"DataType": "String", "StringValue": "broken-1"}},
        )["MessageId"]

        listed = pijobs("dlq", "list", "--json")
        listed_again = pijobs("dlq", "list")
        # A message an earlier test left in flight is not drained; count what the redrive adds to the queue.
        before_redrive = pijobs("ops", "status", "--json").json()
        redriven = pijobs("dlq", "redrive", "--json")
        after_redrive = pijobs("ops", "status", "--json").json()
        received = sqs.receive_message(
            QueueUrl=queue_url, MessageAttributeNames=["All"], MaxNumberOfMessages=10
        )["Messages"]
        moved = [message for message in received if message["Body"] == "{not a job"]
        drain_queue(stack, queue_url)

    assert listed.code == 0, listed.err
    [message] = listed.json()["messages"]
    assert message["message_id"] == sent and message["body"] == "{not a job"
    assert message["job_id"] == "broken-1" and message["receive_count"] >= 1 and message["sent_at"]
    assert listed_again.code == 0 and sent in listed_again.out  # peeking leaves the message in place
    assert redriven.code == 0 and redriven.json() == {"moved": 1, "failed": 0}
    assert after_redrive["dead_letter_queue"]["visible"] == 0
    queued = [
        report["queue"]["visible"] + report["queue"]["in_flight"]
        for report in (before_redrive, after_redrive)
    ]
    assert queued[1] == queued[0] + 1
    assert len(moved) == 1
    assert moved[0]["MessageAttributes"]["job_id"]["StringValue"] == "broken-1"

    for body in ("one", "two"):
        sqs.send_message(QueueUrl=dlq_url, MessageBody=body)
    refused = pijobs("dlq", "purge")  # stdin is not a terminal under pytest
    assert refused.code == 2 and "--yes" in refused.err
    assert pijobs("ops", "status", "--json").json()["dead_letter_queue"]["visible"] == 2
    purged = pijobs("dlq", "purge", "--yes", "--json")
    assert purged.code == 0 and purged.json() == {"purged": 2}
    assert pijobs("dlq", "list", "--json").json()["messages"] == []


# ---- exit codes of --wait, with a stand-in client (no stack needed) ----------------------------------------
class FinishingClient:
    """Accepts a job and reports it finished as ``final`` after one RUNNING reading."""

    def __init__(self, final: str) -> None:
        self.final = final

    def submit(self, function: str, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert (function, params) == ("pi", {"digits": 5})
        return {"job_id": "j-1", "status": "QUEUED", "links": {}}

    def wait(self, job_id: str, *, on_update: Any = None, **_: Any) -> dict[str, Any]:
        soon = "2999-01-01T00:00:00.000Z"  # the API's estimate from the job's own rate
        on_update({"job_id": job_id, "status": "RUNNING", "progress": 0.5, "estimated_finish_at": soon})
        job = {"job_id": job_id, "status": self.final, "progress": 1.0, "error": None, "result": None}
        on_update(job)
        return job


@pytest.mark.parametrize(("final", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("CANCELLED", 1)])
def test_submit_wait_exits_zero_only_on_success_and_keeps_stdout_json(
    final: str, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pijobs.cli.customer.connect", lambda *_: FinishingClient(final))

    exit_code = cli.main(["submit", "--digits", "5", "--wait", "--json"])

    captured = capsys.readouterr()
    assert exit_code == code
    assert json.loads(captured.out)["status"] == final  # stdout: the job's JSON and nothing else
    assert "RUNNING 50% ETA 00:00:00 UTC" in captured.err  # progress and its ETA went to stderr


class CatalogClient:
    """Offers one function with list parameters and keeps what was submitted."""

    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "percentiles": {"type": "array", "items": {"type": "number"}},
            "columns": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
            "top": {"type": "integer"},
        }
    }

    def __init__(self) -> None:
        self.submitted: list[tuple[str, dict[str, Any]]] = []

    def function(self, name: str) -> dict[str, Any]:
        return {"name": name, "parameters": self.schema}

    def submit(self, function: str, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.submitted.append((function, params))
        return {"job_id": "j-2", "status": "QUEUED", "links": {}}


def test_list_parameters_take_a_b_c_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = CatalogClient()
    monkeypatch.setattr("pijobs.cli.customer.connect", lambda *_: client)

    argv = ["submit", "csv-stats", "--param", "percentiles=0.5,0.95", "--param", "columns=a,b c",
            "--param", "top=3", "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    assert cli.main(["submit", "csv-stats", "--param", "percentiles=[0.25]", "--json"]) == 0

    assert client.submitted == [
        ("csv-stats", {"percentiles": [0.5, 0.95], "columns": ["a", "b c"], "top": 3}),
        ("csv-stats", {"percentiles": [0.25]}),  # JSON still works
    ]


# ---- every failure is one line -----------------------------------------------------------------------------
def _pijobs_process(
    argv: list[str], env: dict[str, str], stdout: Any = subprocess.PIPE
) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "pijobs.cli", *argv],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout or "", done.stderr


def _base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIJOBS_"))}
    return {**env, "AWS_DEFAULT_REGION": "us-east-1", **extra}


def _aws_env(stack: LocalStack) -> dict[str, str]:
    return _base_env(
        AWS_ENDPOINT_URL=stack.aws_endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"
    )


def test_each_failure_is_one_line_with_its_exit_code(stack: LocalStack, tmp_path: Path) -> None:
    busy = int(urlsplit(stack.api_url).port or 0)
    no_credentials = _base_env(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    api = {"PIJOBS_API_KEY": stack.api_key}
    cases = [
        (["up", "--ephemeral", "--port", str(busy)], _base_env(), 1, f"port {busy} is in use"),
        (["deploy", "--stack-name", "none"], _aws_env(stack), 1, "no artifacts bucket: pass --bucket"),
        (["deploy", "--poll-seconds", "1"], _aws_env(stack), 1, "has no pijobs manifest: run pijobs package"),
        (["package", "--bucket", "b2", "--no-deps"], _aws_env(stack), 1, "InvalidBucketName"),
        (["ops", "status"], no_credentials, 1, "no AWS credentials"),
        (["keys", "list"], no_credentials, 1, "no AWS credentials"),
        (
            ["status", "a" * 32],
            _base_env(PIJOBS_API_URL=stack.aws_endpoint, **api),
            1,
            "not from the pijobs API",
        ),
        (["demo", "--digits", "0"], _base_env(), 2, "--digits: must be at least 1"),
        (["demo", "--digit", "100"], _base_env(), 2, "unrecognized arguments: --digit"),
        (["submit", "--digits", "5"], _base_env(), 2, "no API URL"),
    ]
    for argv, env, code, says in cases:
        exit_code, _, err = _pijobs_process(argv, env)
        problem = [line for line in err.splitlines() if line.startswith("pijobs")]
        assert exit_code == code, (argv, err)
        assert says in err and "Traceback" not in err, (argv, err)
        assert len(problem) == 1, (argv, err)
        assert "_started" not in err, (argv, err)  # refused before anything starts (a busy port: before moto)


def test_a_closed_pipe_is_not_an_error(stack: LocalStack) -> None:
    read, write = os.pipe()
    os.close(read)  # like `| head` that has already gone
    try:
        env = _base_env(PIJOBS_API_URL=stack.api_url, PIJOBS_API_KEY=stack.api_key)
        code, _, err = _pijobs_process(["functions", "--json"], env, stdout=write)
    finally:
        os.close(write)
    assert code == 0 and err == ""


def test_debug_shows_the_traceback(stack: LocalStack) -> None:
    code, _, err = _pijobs_process(["--debug", "deploy", "--stack-name", "none"], _aws_env(stack))
    assert code == 1 and "Traceback" in err and "no artifacts bucket" in err


def test_result_to_stdout(pijobs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    job_id = pijobs("submit", "--digits", "30", "--wait", "--json").json()["job_id"]

    written = pijobs("result", job_id, "-o", "-")

    assert written.code == 0 and written.err == ""
    assert written.out.splitlines()[-1] == "3.141592653589793238462643383279"
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_a_unique_id_prefix_names_the_job(pijobs: Any, stack: LocalStack) -> None:
    with dispatch_paused(stack):
        job_id = pijobs("submit", "--digits", "70", "--json").json()["job_id"]
        by_prefix = pijobs("status", job_id[:8], "--json")
        unknown = pijobs("status", "ffff0000")
        cancelled = pijobs("cancel", job_id[:10], "--json")

    assert by_prefix.code == 0 and by_prefix.json()["job_id"] == job_id
    assert unknown.code == 1 and "no job of yours starts with ffff0000" in unknown.err
    assert cancelled.code == 0 and cancelled.json()["status"] == "CANCELLED"


def test_upload_a_file_query_it_and_download_the_result_as_parquet(
    pijobs: Any, stack: LocalStack, tmp_path: Path
) -> None:
    data = tmp_path / "scores.csv"
    data.write_text("team,points\nred,3\nblue,5\nred,4\n")

    uploaded = pijobs("upload", str(data))
    upload_id = uploaded.out.strip()
    query = "SELECT team, sum(points) AS points FROM s GROUP BY team ORDER BY team"
    by_id = pijobs("submit", "sql", "--query", query, "--input", f"s={upload_id}", "--format", "parquet",
                   "--wait", "--json")  # fmt: skip
    by_file = pijobs("submit", "sql", "--query", query, "--input", f"s={data}", "--wait", "--json")
    listed = pijobs("uploads", "--json")

    assert uploaded.code == 0 and len(upload_id) == 32 and "AVAILABLE" in uploaded.err, uploaded.err
    assert by_id.code == 0, by_id.err
    assert by_id.json()["result"]["filename"] == "result.parquet"
    target = tmp_path / "out.parquet"
    assert pijobs("result", by_id.json()["job_id"], "-o", str(target)).code == 0
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"SELECT * FROM '{target}'").fetchall() == [("blue", 5), ("red", 7)]
    shown = pijobs("status", by_id.json()["job_id"]).out
    assert re.search(r"^columns +team VARCHAR, points BIGINT$", shown, re.M), shown  # sum() stays an integer
    assert re.search(r"^rows +2$", shown, re.M), shown
    assert by_file.code == 0 and by_file.json()["params"]["inputs"]["s"] != upload_id
    assert "uploaded" in by_file.err
    assert upload_id in [u["upload_id"] for u in listed.json()["uploads"]]
    assert "AVAILABLE" in pijobs("uploads").out


def test_upload_and_inputs_say_what_is_wrong(pijobs: Any, tmp_path: Path) -> None:
    missing = pijobs("upload", str(tmp_path / "nothing.csv"))
    neither = pijobs("submit", "sql", "--query", "SELECT 1 FROM t", "--input", "t=nothing-here")
    unknown = pijobs("submit", "sql", "--query", "SELECT 1 FROM t", "--input", f"t={'0' * 32}")

    assert missing.code == 2 and "is not a file" in missing.err
    assert neither.code == 2 and "neither a file nor an upload id" in neither.err
    assert unknown.code == 1 and "params.inputs.t: no such upload" in unknown.err


# ---- tables at 80 columns ---------------------------------------------------------------------------------
def _fits(run: Run, width: int = 80) -> list[str]:
    lines = run.out.splitlines()
    assert run.code == 0, run.err
    assert lines, run.err
    assert [line for line in lines if len(line) > width] == []
    return lines


def test_tables_fit_80_columns_with_status_function_and_ids_every_command_takes(
    pijobs: Any, stack: LocalStack, tmp_path: Path
) -> None:
    data = tmp_path / "a-rather-long-file-name-that-a-narrow-table-has-to-cut-somewhere.csv"
    data.write_text("team,points\nred,3\nblue,5\n")
    query = "SELECT team, sum(points) AS points, count(*) AS games FROM s GROUP BY team ORDER BY team"
    with dispatch_paused(stack):
        sql = pijobs("submit", "sql", "--query", query, "--input", f"s={data}",
                     "--name", "a long name for a job that goes on and on", "--json")  # fmt: skip
        pi = pijobs("submit", "--digits", "80", "--json")
        listing = pijobs("list", "--limit", "5")
        wide = pijobs("list", "--limit", "5", "--wide")
        uploads = pijobs("uploads")
        for job in (sql, pi):
            assert pijobs("cancel", job.json()["job_id"]).code == 0
    sql_id = sql.json()["job_id"]

    lines = _fits(listing)
    assert lines[0].split()[:3] == ["ID", "STATUS", "FUNCTION"]
    row = next(line for line in lines if line.startswith(sql_id[:12]))
    shown_id, status, function = row.split()[:3]
    assert (status, function) == ("QUEUED", "sql") and "query=SELECT" in row
    assert pijobs("status", shown_id, "--json").json()["job_id"] == sql_id  # the prefix names the job
    assert sql_id in wide.out and query in wide.out  # --wide: whole, however long the line

    upload_lines = _fits(uploads)
    assert upload_lines[0].split()[:2] == ["UPLOAD", "STATUS"]
    upload_id = pijobs("status", sql_id, "--json").json()["params"]["inputs"]["s"]
    shown_upload = next(line for line in upload_lines if line.startswith(upload_id[:12])).split()[0]
    with dispatch_paused(stack):
        again = pijobs("submit", "sql", "--query", query, "--input", f"s={shown_upload}", "--json")
        assert again.code == 0, again.err
        again_job = pijobs("cancel", again.json()["job_id"], "--json").json()
        assert again_job["params"]["inputs"] == {"s": upload_id}  # an upload id's prefix works too

    functions = _fits(pijobs("functions"))
    assert functions[0].split()[:2] == ["NAME", "VERSION"]
    assert any(line.startswith("pi ") and "digits:integer" in line for line in functions)
    keys = _fits(pijobs("keys", "list"))
    assert keys[0].split() == ["ID", "NAME", "STATE", "CREATED"]
    assert any(stack.api_key_id in line for line in keys[1:])


def test_logs_prints_a_job_s_worker_log(pijobs: Any, stack: LocalStack) -> None:
    log_dir = str(stack.config.log_dir)
    job_id = pijobs("submit", "--digits", "40", "--wait", "--json").json()["job_id"]

    whole = pijobs("logs", job_id, "--log-dir", log_dir)
    by_prefix = pijobs("logs", job_id[:12], "--log-dir", log_dir)
    unknown = pijobs("logs", "ffff0000", "--log-dir", log_dir)

    assert whole.code == 0 and '"event": "job_started"' in whole.out and job_id in whole.out
    assert "attempt 1 of 1" in whole.err
    assert by_prefix.out == whole.out
    assert unknown.code == 1 and "no worker log of job ffff0000" in unknown.err


# ---- pijobs functions check PATH --------------------------------------------------------------------------
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"

BROKEN_PLUGIN = """
from typing import ClassVar
from pydantic import BaseModel, ConfigDict, Field
from pijobs.functions import BusinessFunction, Inputs


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(max_length=1)


class Broken(BusinessFunction):
    name = "broken-fn"
    version = "1"
    title = "Broken"
    description = "Checked before packaging."
    request_model = Params
    accepts_inputs = True
    resource_types: ClassVar[frozenset[str]] = frozenset({"AWS::EC2::Instance"})
    instance_types = ("c7i.large",)

    def instance_type(self, params): return "c7i.large"
    def deadline_seconds(self, params): return 120
    def stack_parameters(self, params): return {}
    def run(self, ctx): raise NotImplementedError
"""


def test_functions_check_says_a_plug_in_is_ready_or_what_is_wrong(pijobs: Any, tmp_path: Path) -> None:
    ready = pijobs("functions", "check", str(PLUGINS / "wordcount"), "--no-lint")

    broken = tmp_path / "broken"
    (broken / "pijobs_broken_fn").mkdir(parents=True)
    (broken / "pijobs_broken_fn" / "__init__.py").write_text(BROKEN_PLUGIN)
    (broken / "pyproject.toml").write_text(
        '[project]\nname = "broken"\nversion = "1"\n'
        '[project.entry-points."pijobs.functions"]\nbroken-fn = "pijobs_broken_fn:Broken"\n'
    )
    refused = pijobs("functions", "check", str(broken), "--no-lint")
    nowhere = pijobs("functions", "check", str(tmp_path / "nowhere"))

    assert ready.code == 0 and ready.out == "word-count 1.0.0: ready to package\n", ready.err
    assert refused.code == 1 and refused.out.startswith("broken-fn 1: 1 problem(s)\n")
    assert "request_model.inputs: its max_length=1 is ignored" in refused.out
    assert nowhere.code == 2 and "does not exist" in nowhere.err
