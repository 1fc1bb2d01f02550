"""moto's SQS, without building a queue's every attribute for each message it hands out.

Before it hands out a message, moto checks it against its queue's retention period, which it reads through
``get_queue_attributes``: that builds all of the queue's attributes, twice, and three of them count the
queue's messages one by one, reading the clock for each. Each message received walked its whole queue six
times inside the server: at 500 jobs with webhooks, a twentieth of the embedded stack's time. ``install()``
reads the retention period from the queue itself, the value those attributes hold: the check is the same.
"""

from __future__ import annotations

from moto.core.utils import unix_time
from moto.sqs.models import Message, SQSBackend


def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
    retention_period = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
    sent_at = (message.sent_timestamp or 0) / 1000  # set when it was sent, in milliseconds
    return bool(retention_period + sent_at > unix_time())


def install() -> None:
    """From now on, in this process, moto's receives read a queue's retention period directly (idempotent)."""
    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )
