"""The embedded stack runs its workers the way a job's instance runs: with its attempt's worker token and
the API's URL, and nothing of AWS (no credentials, no endpoint), in the process and in the warm interpreter
it is forked from. pi, sql and word-count run that way (tests/e2e/test_http.py, test_sql.py,
test_functions.py); here what the worker was given, and the channel over real HTTP."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from pijobs.local.stack import LocalStack
from pijobs.shared.channel import API_URL_ENV, TOKEN_ENV
from tests.e2e.test_http import Client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dora(local_stack: LocalStack) -> Client:
    return Client(local_stack, local_stack.create_api_key("dora")[1])


class SpawnSpy:
    """Records the environment each worker is started with (and lets the runner start it)."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self._spawn = runner._spawn
        self.envs: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, instance_id: str, job_id: str, env: dict[str, str]) -> Any:
        with self._lock:
            self.envs[job_id] = dict(env)
        return self._spawn(instance_id, job_id, env)

    def __enter__(self) -> SpawnSpy:
        self._runner._spawn = self
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner._spawn = self._spawn


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode(errors="replace").split("\0") if "=" in entry)


def test_a_worker_gets_its_token_and_the_api_and_nothing_of_aws(
    local_stack: LocalStack, dora: Client
) -> None:
    with SpawnSpy(local_stack.runner) as spy:
        job_id = dora.post("/jobs", {"function": "word-count", "params": {"text": "a b a"}}).json()["job_id"]
        job = dora.wait(job_id)
    assert job["status"] == "SUCCEEDED", job

    env = spy.envs[job_id]
    assert not [k for k in env if k.upper().startswith(("AWS_", "BOTO"))], sorted(env)
    assert env[API_URL_ENV] == local_stack.api_url
    assert len(env[TOKEN_ENV]) >= 43
    # The token is this job's: the record keeps its hash, never the token.
    table = local_stack.outputs["TableName"]
    item = local_stack.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": f"job#{job_id}"}})[
        "Item"
    ]
    assert item["channel"]["M"]["token_sha256"]["S"] == hashlib.sha256(env[TOKEN_ENV].encode()).hexdigest()
    assert env[TOKEN_ENV] not in str(item)
    # Spent: the attempt is over.
    spent = requests.post(
        f"{local_stack.api_url}/worker/jobs/{job_id}/heartbeat",
        json={"progress": 0.5},
        headers={"Authorization": f"Bearer {env[TOKEN_ENV]}"},
        timeout=10,
    )
    assert spent.status_code == 410 and spent.json()["error"]["code"] == "attempt_ended"


def test_the_warm_interpreter_workers_are_forked_from_holds_no_credentials(local_stack: LocalStack) -> None:
    server = local_stack.runner._fork_server
    assert server is not None and server.is_alive()
    env = _environ(server._process.pid)
    assert not [k for k in env if k.upper().startswith(("AWS_", "BOTO"))], sorted(env)
    assert TOKEN_ENV not in env


def test_the_worker_channel_is_not_the_customer_s_api(local_stack: LocalStack, dora: Client) -> None:
    """An API key opens nothing there, and the customer's OpenAPI document does not list it."""
    job_id = dora.post("/jobs", {"function": "word-count", "params": {"text": "x"}}).json()["job_id"]
    with_key = dora.post(f"/worker/jobs/{job_id}/start", {})
    assert with_key.status_code == 401 and with_key.json()["error"]["code"] == "unauthenticated"
    forged = requests.post(
        f"{local_stack.api_url}/worker/jobs/{job_id}/finish",
        json={"outcome": "FAILED", "error": {"code": "x", "message": "x"}},
        headers={"Authorization": "Bearer " + "A" * 43},
        timeout=10,
    )
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "forbidden"
    document = requests.get(f"{local_stack.api_url}/openapi.json", timeout=10).json()
    assert not [path for path in document["paths"] if path.startswith("/worker")]
    assert dora.wait(job_id)["status"] == "SUCCEEDED"
