"""A local Lambda event source mapping for a DynamoDB stream (the webhook notifier's).

Like Lambda's: one poller per shard reads records in order from the trim horizon, keeps those the mapping's
filter lets through (the template's pattern: INSERTs of items whose ``pk`` starts with a prefix), hands them
to the handler in batches, and retries the records the handler answered in ``batchItemFailures`` (from the
first failed one, as Lambda does for a stream) up to ``max_retries`` times. Then, as Lambda does, it hands
``on_failure`` a description of what it gave up on (Lambda's invocation record for an on-failure
destination: the shard, the first and last sequence numbers, the batch's size) and goes on with the next
records; the local stack sends it to the template's on-failure queue. moto keeps a stream's records in
memory and runs no mapping of its own here (the local stack detaches moto's, which would need Docker).

``parallelization`` is the mapping's ``ParallelizationFactor``: that many batches of one shard are handled
at once, each record going to the batch lane of its partition key (the item's keys), so one key's records
stay in order and a slow batch holds up only the keys of its lane. The poller reads ahead while they work.

The poller follows each read's ``NextShardIterator``, and asks for a new iterator after the last sequence
number read once the one it follows is a second old (or a read failed): moto's own transactions replace a
table (and its stream's shard) with a copy whenever one is cancelled, which would leave an old iterator
reading a shard nobody writes to any more (pijobs.local.moto_transactions keeps the table; the renewal bounds
whatever moto does to a second). ``forget`` drops the iterators moto keeps for each call (it never expires
them).

With ``woken=True`` an empty read does not poll again every 50 ms: the poller sleeps until ``notify()`` (the
local stack calls it for each DynamoDB transaction moto answered: the lifecycle writes its events in them),
or a second at most. It reads at most every 20 ms, however many transactions wake it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Any

import structlog

from pijobs.local.lambda_context import LambdaContext
from pijobs.shared.logs import clear_context
from pijobs.shared.models import isoformat, utcnow

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
Lane = queue.SimpleQueue[dict[str, Any]]  # the records of one batch lane, in stream order

_POLL_S = 0.05
_WOKEN_RECHECK_S = 1.0  # a woken poller reads anyway this often (what no notify announced)
_MIN_READ_GAP_S = 0.02  # wakes come with every transaction: at most one read per gap
_ITERATOR_AGE_S = 1.0  # then a new iterator after the last record read (see above)
_RETRY_S = 1.0
_STOP_JOIN_TIMEOUT_S = 10.0


def passes(record: dict[str, Any], prefix: str) -> bool:
    """The template's filter: an INSERT of an item whose ``pk`` starts with ``prefix``."""
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    return record.get("eventName") == "INSERT" and str(image.get("pk", {}).get("S", "")).startswith(prefix)


class LocalStreamMapping:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        stream_arn: str,
        handler: Handler,
        *,
        prefix: str,
        batch_size: int,
        max_retries: int,
        parallelization: int,
        function_name: str = "notifier",
        function_arn: str = "",
        forget: Callable[[str], object] = lambda iterator: None,
        on_failure: Callable[[dict[str, Any]], object] = lambda record: None,
        woken: bool = False,
    ) -> None:
        self._on_failure = on_failure
        self._forget = forget
        self._idle_s = _WOKEN_RECHECK_S if woken else _POLL_S
        self._wake = threading.Event()
        self._client_factory = client_factory
        self._arn = stream_arn
        self._handler = handler
        self._prefix = prefix
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._function_name = function_name
        self._function_arn = function_arn or function_name
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shard: str | None = None
        self._lanes: list[queue.SimpleQueue[dict[str, Any]]] = [
            queue.SimpleQueue() for _ in range(parallelization)
        ]
        self._read_ahead = 2 * batch_size * parallelization
        self._counting = threading.Lock()
        self.handled = 0

    def start(self) -> LocalStreamMapping:
        name = f"stream-{self._function_name}"
        self._threads = [threading.Thread(target=self._run, name=name, daemon=True)] + [
            threading.Thread(target=self._work, args=(lane,), name=f"{name}-{n}", daemon=True)
            for n, lane in enumerate(self._lanes)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(_STOP_JOIN_TIMEOUT_S)

    def __enter__(self) -> LocalStreamMapping:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def notify(self) -> None:
        """Something may have been written to the stream: read it now (``woken`` pollers)."""
        self._wake.set()

    def _run(self) -> None:
        """The shard's poller: reads records in order and hands each to its key's lane."""
        streams = self._client_factory()
        last: str | None = None
        iterator, renew_at, read_at = "", 0.0, 0.0
        while not self._stop.is_set():
            try:
                if sum(lane.qsize() for lane in self._lanes) >= self._read_ahead:
                    self._stop.wait(_POLL_S)  # the lanes are behind: let them catch up
                    continue
                self._stop.wait(max(0.0, read_at + _MIN_READ_GAP_S - time.monotonic()))
                self._wake.clear()  # before the read: a write after it wakes the next one
                read_at = time.monotonic()
                if not iterator or read_at >= renew_at:
                    self._forget(iterator)
                    iterator, renew_at = self._iterator(streams, last), read_at + _ITERATOR_AGE_S
                response = streams.get_records(ShardIterator=iterator, Limit=1000)
                self._forget(iterator)
                iterator = str(response.get("NextShardIterator") or "")
                records = response.get("Records", [])
                if records:
                    last = max((r["dynamodb"]["SequenceNumber"] for r in records), key=int)
                for record in records:
                    if passes(record, self._prefix):
                        self._lane_of(record).put(record)
                if not records:
                    self._wake.wait(self._idle_s)
            except Exception:
                log.exception("stream_poll_failed", function=self._function_name)
                self._forget(iterator)
                iterator = ""  # a new one after the last record read
                self._stop.wait(_RETRY_S)
        self._forget(iterator)

    def _lane_of(self, record: dict[str, Any]) -> Lane:
        keys = json.dumps((record.get("dynamodb") or {}).get("Keys") or {}, sort_keys=True)
        return self._lanes[zlib.crc32(keys.encode()) % len(self._lanes)]

    def _work(self, lane: Lane) -> None:
        """One lane: its records in batches of at most ``batch_size``, one batch at a time."""
        while not self._stop.is_set():
            try:
                batch = [lane.get(timeout=_POLL_S)]
            except queue.Empty:
                continue
            while len(batch) < self._batch_size:
                try:
                    batch.append(lane.get_nowait())
                except queue.Empty:
                    break
            self._deliver(batch)

    def _iterator(self, streams: Any, after: str | None) -> str:
        if self._shard is None:
            description = streams.describe_stream(StreamArn=self._arn)["StreamDescription"]
            self._shard = str(description["Shards"][0]["ShardId"])
        where: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
        if after is not None:
            where = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        found = streams.get_shard_iterator(StreamArn=self._arn, ShardId=self._shard, **where)
        return str(found["ShardIterator"])

    def _deliver(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hand ``batch`` over, retrying what failed; what is left after the retries is ``on_failure``'s."""
        raised = False
        for attempt in range(self._max_retries + 1):
            clear_context()
            try:
                answer = self._handler({"Records": batch}, LambdaContext(self._function_name))
                failed = {f.get("itemIdentifier") for f in (answer or {}).get("batchItemFailures", [])}
                raised = False
            except Exception:
                log.exception("stream_handler_failed", function=self._function_name)
                failed = {batch[0]["dynamodb"].get("SequenceNumber")}
                raised = True
            numbers = [r["dynamodb"].get("SequenceNumber") for r in batch]
            first = next((i for i, n in enumerate(numbers) if n in failed), None)
            with self._counting:
                self.handled += len(batch) if first is None else first
            if first is None:
                return []
            batch = batch[first:]
            if self._stop.wait(_RETRY_S * (attempt + 1)):
                return batch
        log.error("stream_records_discarded", function=self._function_name, records=len(batch))
        try:
            self._on_failure(self._discarded(batch, raised))
        except Exception:
            log.exception("stream_on_failure_failed", function=self._function_name, records=len(batch))
        return []

    def _discarded(self, batch: list[dict[str, Any]], raised: bool) -> dict[str, Any]:
        """Lambda's invocation record for a stream batch it gave up on: where the records are, not them."""
        numbers = [record["dynamodb"]["SequenceNumber"] for record in batch]
        arrivals = [record["dynamodb"].get("ApproximateCreationDateTime") for record in batch]
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if raised:
            response["functionError"] = "Unhandled"
        return {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self._function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": self._max_retries + 1,
            },
            "responseContext": response,
            "version": "1.0",
            "timestamp": isoformat(utcnow()),
            "DDBStreamBatchInfo": {
                "shardId": self._shard,
                "startSequenceNumber": min(numbers, key=int),
                "endSequenceNumber": max(numbers, key=int),
                "approximateArrivalOfFirstRecord": arrivals[0] and isoformat(arrivals[0]),
                "approximateArrivalOfLastRecord": arrivals[-1] and isoformat(arrivals[-1]),
                "batchSize": len(batch),
                "streamArn": self._arn,
            },
        }
