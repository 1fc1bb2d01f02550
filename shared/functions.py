"""Business functions: what a customer may ask for and how it maps onto a stack.

A second function is a new entry here (request model + stack parameters + worker entry point), not a rewrite
of the API or the dispatcher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.models import PiRequest

# Instance types by the most digits they serve (memory first: ~40 bytes a digit at the peak, see docs/pi.md).
PI_INSTANCE_TYPES: tuple[tuple[int, str], ...] = (
    (20_000_000, "c7i.large"),
    (60_000_000, "c7i.xlarge"),
    (100_000_000, "r7i.large"),
)
BOOT_SECONDS = 300  # instance start, package install and upload, generously


@dataclass(frozen=True)
class PiFunction:
    name: str = "pi"
    request_model: type[BaseModel] = PiRequest
    worker_module: str = "worker"

    def params(self, request: PiRequest) -> dict[str, Any]:
        """The parameters the job record keeps (the request's business fields only)."""
        return {"digits": request.digits}

    def instance_type(self, params: dict[str, Any]) -> str:
        digits = int(params["digits"])
        for limit, instance_type in PI_INSTANCE_TYPES:
            if digits <= limit:
                return instance_type
        return PI_INSTANCE_TYPES[-1][1]

    def deadline_seconds(self, params: dict[str, Any]) -> int:
        """A hard deadline: boot overhead plus five times the engine's time on two slow cores."""
        digits = int(params["digits"])
        compute = 1.5e-6 * digits * max(1.0, math.log10(max(digits, 10)) - 5)
        return int(BOOT_SECONDS + 5 * compute)

    def stack_parameters(self, job_id: str, params: dict[str, Any]) -> dict[str, str]:
        """The only parameters a job may set on its stack; everything else is the operator's."""
        return {
            "JobId": job_id,
            "Digits": str(int(params["digits"])),
            "InstanceType": self.instance_type(params),
            "DeadlineSeconds": str(self.deadline_seconds(params)),
        }


FUNCTIONS: dict[str, PiFunction] = {"pi": PiFunction()}


def get_function(name: str) -> PiFunction:
    return FUNCTIONS[name]
