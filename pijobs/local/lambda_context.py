"""A stand-in for the context object Lambda passes to a handler."""

from __future__ import annotations

import time
import uuid

_ACCOUNT_ID = "123456789012"


class LambdaContext:
    """The attributes handlers read from Lambda's context, with a deadline ``timeout_s`` from creation."""

    def __init__(
        self,
        function_name: str,
        *,
        timeout_s: float = 30.0,
        memory_limit_in_mb: int = 128,
        region: str = "us-east-1",
        aws_request_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{_ACCOUNT_ID}:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/[$LATEST]{uuid.uuid4().hex}"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
