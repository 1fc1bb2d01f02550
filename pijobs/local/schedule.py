"""A stand-in for an EventBridge schedule: calls a Lambda handler every ``interval`` seconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pijobs.local.lambda_context import LambdaContext
from pijobs.shared.logs import get_logger

log = get_logger(__name__)


class LocalSchedule:
    def __init__(self, handler: Callable[[dict[str, Any], Any], Any], *, interval: float, name: str) -> None:
        self._handler = handler
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> LocalSchedule:
        self._thread = threading.Thread(target=self._loop, name=f"schedule-{self._name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def run_once(self) -> Any:
        event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
        return self._handler(event, LambdaContext(function_name=self._name))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
                self.runs += 1
            except Exception:
                log.exception("scheduled_run_failed", schedule=self._name)
