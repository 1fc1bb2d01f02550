"""The SQS job queue adapter."""

from __future__ import annotations

from typing import Any

from pijobs.shared.models import JobMessage


class JobQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def send(self, message: JobMessage, *, delay_seconds: int = 0) -> str:
        response = self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=message.model_dump_json(),
            DelaySeconds=max(0, min(900, delay_seconds)),
            MessageAttributes={
                "job_id": {"DataType": "String", "StringValue": message.job_id or "-"},
            },
        )
        return str(response["MessageId"])
