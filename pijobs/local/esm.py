"""A local Lambda event source mapping for an SQS queue.

Like Lambda's: pollers long-poll the queue, hand batches of at most ``BatchSize`` records (SQS event format)
to the handler with at most ``MaximumConcurrency`` invocations in flight, delete every record the handler did
not report in ``batchItemFailures``, and delete nothing when the handler raises or answers with a malformed
response. Settings are re-read at run time, so operators change them without a restart.

Concurrency is the number of active pollers: each poller receives, invokes and deletes in turn, so at most
``maximum_concurrency`` invocations run at once. Lowering it lets surplus pollers finish their batch and idle.

With ``woken=True`` pollers do not long-poll: an empty queue puts them to sleep until ``notify(delay_s)``
(the local stack calls it for each SendMessage moto answers, with its DelaySeconds, and for each change of a
message's visibility), until a failed batch's visibility timeout has passed, or for at most ``recheck_s``
(a second). moto itself only re-checks delayed and reappearing messages once a second during a long poll.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog

from pijobs.local.lambda_context import LambdaContext
from pijobs.shared.logs import clear_context

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
SettingsProvider = Callable[[], Mapping[str, Any]]

MAX_CONCURRENCY = 1000
_WAIT_TIME_S = 2  # long polls stay short so stop() is quick
_ERROR_BACKOFF_S = 1.0
_IDLE_SLEEP_S = 0.2
_WOKEN_RECHECK_S = 1.0  # woken pollers look anyway this often: what no notify announced (e.g. a redrive)
_WAKE_MARGIN_S = 0.02  # a message due at t is visible a little after t (moto's clock is in milliseconds)
_STOP_JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EsmSettings:
    batch_size: int
    maximum_concurrency: int
    batching_window_s: float


@dataclass(frozen=True)
class EsmStats:
    invocations: int
    in_flight: int
    max_in_flight: int
    records_deleted: int
    records_failed: int
    handler_errors: int


_SETTING_NAMES = {
    "batch_size": "batch_size",
    "BatchSize": "batch_size",
    "maximum_concurrency": "maximum_concurrency",
    "MaximumConcurrency": "maximum_concurrency",
    "batching_window_s": "batching_window_s",
    "MaximumBatchingWindowInSeconds": "batching_window_s",
}


def settings_from(given: Mapping[str, Any], current: EsmSettings) -> EsmSettings:
    """``current`` updated with what ``given`` holds (snake_case or the mapping's AWS names)."""
    values: dict[str, Any] = dict(current.__dict__)
    for name, value in given.items():
        if name in _SETTING_NAMES and value is not None:
            values[_SETTING_NAMES[name]] = value
    return EsmSettings(
        batch_size=max(1, int(values["batch_size"])),
        maximum_concurrency=min(MAX_CONCURRENCY, max(1, int(values["maximum_concurrency"]))),
        batching_window_s=max(0.0, float(values["batching_window_s"])),
    )


def lambda_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """SQS ``MessageAttributes`` as Lambda puts them in a record (camelCase, binary as base64)."""
    converted: dict[str, Any] = {}
    for name, attr in attributes.items():
        binary = attr.get("BinaryValue")
        converted[name] = {
            "stringValue": attr.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
            "stringListValues": list(attr.get("StringListValues", [])),
            "binaryListValues": [base64.b64encode(b).decode() for b in attr.get("BinaryListValues", [])],
            "dataType": attr.get("DataType", "String"),
        }
    return converted


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of an SQS event, as Lambda builds it from a received message."""
    body = message.get("Body", "")
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {name: str(value) for name, value in message.get("Attributes", {}).items()},
        "messageAttributes": lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_ids(response: Any, batch_ids: set[str]) -> set[str] | None:
    """Message ids the handler reported as failed; None when the response makes the whole batch fail."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    ids: set[str] = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not item or item not in batch_ids:
            return None  # Lambda treats an empty or unknown identifier as a failure of the whole batch
        ids.add(item)
    return ids


class LocalEventSourceMapping:
    """Feeds the SQS queue at ``queue_url`` to ``handler`` the way Lambda's event source mapping does."""

    def __init__(
        self,
        sqs_client_factory: Callable[[], Any],
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        maximum_concurrency: int = 2,
        batching_window_s: float = 0,
        settings_provider: SettingsProvider | None = None,
        function_name: str = "dispatcher",
        timeout_s: float = 30.0,
        woken: bool = False,
        recheck_s: float = _WOKEN_RECHECK_S,
    ) -> None:
        self._client_factory = sqs_client_factory
        self._queue_url = queue_url
        self._handler = handler
        self._settings = EsmSettings(batch_size, maximum_concurrency, batching_window_s)
        self._settings_provider = settings_provider
        self._function_name = function_name
        self._timeout_s = timeout_s
        self._woken = woken
        self._recheck_s = recheck_s
        self._wake = threading.Condition()
        self._wakes = 0  # notifications so far: after an empty receive, sleep only if none came since
        self._due: list[float] = []  # monotonic times when a delayed or failed message becomes visible
        self._visibility_timeout_s = 30.0
        self._queue_arn = ""
        self._region = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pollers: list[threading.Thread] = []
        self._supervisor: threading.Thread | None = None
        self._counts = dict.fromkeys(
            ("invocations", "in_flight", "max_in_flight", "deleted", "failed", "handler_errors"), 0
        )

    @property
    def stats(self) -> EsmStats:
        with self._lock:
            c = self._counts
            return EsmStats(
                invocations=c["invocations"],
                in_flight=c["in_flight"],
                max_in_flight=c["max_in_flight"],
                records_deleted=c["deleted"],
                records_failed=c["failed"],
                handler_errors=c["handler_errors"],
            )

    @property
    def settings(self) -> EsmSettings:
        return self._settings

    def start(self) -> LocalEventSourceMapping:
        if self._supervisor is not None:
            return self
        client = self._client_factory()
        names = ["QueueArn", "VisibilityTimeout"]
        attrs = client.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=names)
        self._queue_arn = attrs["Attributes"]["QueueArn"]
        self._visibility_timeout_s = float(attrs["Attributes"].get("VisibilityTimeout", 30))
        self._region = client.meta.region_name
        self._stop.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="esm-supervisor", daemon=True)
        self._supervisor.start()
        log.info("esm_started", queue_arn=self._queue_arn, **self._settings.__dict__)
        return self

    def notify(self, delay_s: float = 0.0) -> None:
        """A message is (or, after ``delay_s``, will be) visible in the queue: one sleeping poller receives
        it (waking them all made each send cost one receive per poller, all but one of them empty)."""
        with self._wake:
            if delay_s > 0:
                heapq.heappush(self._due, time.monotonic() + delay_s + _WAKE_MARGIN_S)
            else:
                self._wakes += 1
            self._wake.notify()

    def stop(self) -> None:
        supervisor = self._supervisor
        if supervisor is None:
            return
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        supervisor.join(timeout=_STOP_JOIN_TIMEOUT_S)
        deadline = time.monotonic() + _STOP_JOIN_TIMEOUT_S
        for poller in self._pollers:
            poller.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = sum(poller.is_alive() for poller in self._pollers)
        if alive:
            log.warning("esm_pollers_still_running", count=alive)
        self._pollers = []
        self._supervisor = None
        log.info("esm_stopped", **self.stats.__dict__)

    def __enter__(self) -> LocalEventSourceMapping:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- settings and pollers -------------------------------------------------------------------------------

    def _refresh_settings(self) -> EsmSettings:
        if self._settings_provider is None:
            return self._settings
        try:
            updated = settings_from(self._settings_provider() or {}, self._settings)
        except Exception as exc:  # a bad reading keeps the settings in force
            log.warning("esm_settings_read_failed", error=repr(exc))
            return self._settings
        if updated != self._settings:
            log.info("esm_settings_changed", **updated.__dict__)
            self._settings = updated
        return updated

    def _supervise(self) -> None:
        """Keeps as many pollers alive as the current ``maximum_concurrency`` asks for."""
        while not self._stop.is_set():
            wanted = self._refresh_settings().maximum_concurrency
            while len(self._pollers) < wanted:
                index = len(self._pollers)
                poller = threading.Thread(
                    target=self._poll, args=(index,), name=f"esm-poller-{index}", daemon=True
                )
                self._pollers.append(poller)
                poller.start()
            self._stop.wait(0.5)

    def _poll(self, index: int) -> None:
        client: Any = None
        while not self._stop.is_set():
            if index >= self._settings.maximum_concurrency:
                self._stop.wait(_IDLE_SLEEP_S)
                continue
            try:
                client = client or self._client_factory()
                self._poll_once(client, self._settings)
            except Exception as exc:
                log.warning("esm_poll_failed", error=repr(exc))
                self._stop.wait(_ERROR_BACKOFF_S)

    def _poll_once(self, client: Any, settings: EsmSettings) -> None:
        if self._woken:
            with self._wake:
                wakes = self._wakes
        messages = self._receive_batch(client, settings)
        if not messages:
            if self._woken:
                self._sleep_until_woken(wakes)
            return
        if self._stop.is_set():
            self._release(client, messages)
            return
        self._invoke(client, messages)

    def _sleep_until_woken(self, wakes: int) -> None:
        """After an empty receive: until a notify since ``wakes``, a due message, the recheck, or the stop."""
        recheck = time.monotonic() + self._recheck_s
        with self._wake:
            while not self._stop.is_set() and self._wakes == wakes:
                now = time.monotonic()
                if self._due and self._due[0] <= now:
                    heapq.heappop(self._due)  # this poller receives what came due
                    return
                until = min(self._due[0], recheck) if self._due else recheck
                if until <= now:
                    return
                self._wake.wait(until - now)

    def _receive_batch(self, client: Any, settings: EsmSettings) -> list[dict[str, Any]]:
        """Up to ``batch_size`` messages: one long poll (or, woken, one receive), then more until the batching
        window closes."""
        messages = self._receive(client, settings.batch_size, 0 if self._woken else _WAIT_TIME_S)
        deadline = time.monotonic() + settings.batching_window_s
        while messages and len(messages) < settings.batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(_WAIT_TIME_S, max(1, math.ceil(remaining)))
            messages.extend(self._receive(client, settings.batch_size - len(messages), wait))
        return messages

    def _receive(self, client: Any, wanted: int, wait_s: int) -> list[dict[str, Any]]:
        response = client.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=min(10, wanted),
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    # --- invocation -----------------------------------------------------------------------------------------

    def _invoke(self, client: Any, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [sqs_record(m, self._queue_arn, self._region) for m in messages]}
        context = LambdaContext(self._function_name, timeout_s=self._timeout_s, region=self._region)
        self._count_start()
        try:
            response = self._handler(event, context)
        except Exception:
            log.exception("esm_handler_failed", records=len(messages), request_id=context.aws_request_id)
            self._count_end(failed=len(messages), error=True)
            self._expect_back()
            return
        finally:
            clear_context()  # the handler's bound job_id is not the poller's
        self._count_end()
        self._settle(client, messages, response)

    def _settle(self, client: Any, messages: list[dict[str, Any]], response: Any) -> None:
        batch_ids = {m["MessageId"] for m in messages}
        failed = failed_ids(response, batch_ids)
        if failed is None:
            log.warning("esm_malformed_response", records=len(messages))
            failed = batch_ids
        done = [m for m in messages if m["MessageId"] not in failed]
        self._delete(client, done)
        if failed:
            self._expect_back()
        with self._lock:
            self._counts["deleted"] += len(done)
            self._counts["failed"] += len(failed)
        # A batch that went through is routine (the handler logged each job): at debug, like the sweeps.
        (log.info if failed else log.debug)(
            "esm_batch_done", records=len(messages), deleted=len(done), failed=len(failed)
        )

    def _expect_back(self) -> None:
        """Records left undeleted come back once their visibility timeout has passed."""
        if self._woken:
            self.notify(self._visibility_timeout_s)

    def _delete(self, client: Any, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            response = client.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
            for failure in response.get("Failed", []):
                log.warning("esm_delete_failed", code=failure.get("Code"), message=failure.get("Message"))

    def _release(self, client: Any, messages: list[dict[str, Any]]) -> None:
        """Stopping with a received, uninvoked batch: make it visible again at once."""
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            try:
                client.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
                self.notify()
            except Exception as exc:
                log.warning("esm_release_failed", error=repr(exc))

    def _count_start(self) -> None:
        with self._lock:
            c = self._counts
            c["invocations"] += 1
            c["in_flight"] += 1
            c["max_in_flight"] = max(c["max_in_flight"], c["in_flight"])

    def _count_end(self, *, failed: int = 0, error: bool = False) -> None:
        with self._lock:
            self._counts["in_flight"] -= 1
            self._counts["failed"] += failed
            if error:
                self._counts["handler_errors"] += 1
