"""The business function "pi": N digits of pi after "3.", computed on one instance and stored as text.

This module is what the API imports to validate requests and show the catalog: it needs only pydantic and
``shared``. The engine (gmpy2) is imported inside ``run``, on the instance.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from pijobs.shared.functions import BOOT_SECONDS, BusinessFunction, JobRefusedError, OutputFile, RunContext
from pijobs.shared.models import isoformat, utcnow
from pijobs.worker.pi.bounds import MAX_DIGITS

# Instance types by the most digits they serve (memory first: ~40 bytes a digit at the peak, see docs/pi.md).
PI_INSTANCE_TYPES: tuple[tuple[int, str], ...] = (
    (20_000_000, "c7i.large"),
    (60_000_000, "c7i.xlarge"),
    (MAX_DIGITS, "r7i.large"),
)


class PiParams(BaseModel):
    """The parameters of a pi job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # At most the operator's max_digits (PiLimits, itself at most MAX_DIGITS): PiFunction.parameter_bounds.
    digits: StrictInt = Field(ge=1, description="decimals after '3.'", examples=[1000])


class PiLimits(BaseModel):
    """What the operator allows (template parameter FunctionLimits, e.g. {"pi": {"max_digits": N}})."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_digits: StrictInt = Field(default=10_000_000, ge=1, le=MAX_DIGITS)


class PiFunction(BusinessFunction):
    name = "pi"
    version = "1"
    title = "Digits of pi"
    description = (
        "N decimals of pi after '3.', exact (truncated, never rounded), as a text file: three header lines "
        "(InstanceId, Timestamp, Digits), then '3.' and the digits."
    )
    request_model = PiParams
    limits_model = PiLimits
    error_codes = frozenset({"too_large"})
    instance_types = tuple(dict.fromkeys(instance_type for _, instance_type in PI_INSTANCE_TYPES))
    stack_parameter_names = ("Digits",)
    requirements = ("gmpy2>=2.2",)

    def parameter_bounds(self, limits: PiLimits) -> dict[str, dict[str, int | float]]:
        return {"digits": {"maximum": limits.max_digits}}

    def instance_type(self, params: PiParams) -> str:
        return next(kind for most, kind in PI_INSTANCE_TYPES if params.digits <= most)

    def deadline_seconds(self, params: PiParams) -> int:
        """Boot overhead plus five times the engine's time on two slow cores."""
        digits = params.digits
        compute = 1.5e-6 * digits * max(1.0, math.log10(max(digits, 10)) - 5)
        return int(BOOT_SECONDS + 5 * compute)

    def stack_parameters(self, params: PiParams) -> dict[str, str]:
        return {"Digits": str(params.digits)}  # recorded on the instance's tags for operators

    def run(self, ctx: RunContext) -> OutputFile:
        from pijobs.worker.pi.engine import PiTooLargeError, compute_pi  # lazy: gmpy2, on the instance only

        filename = f"pi-{ctx.params.digits}.txt"
        path = ctx.scratch / filename
        header = (
            f"InstanceId: {ctx.instance_id or 'unknown'}\n"
            f"Timestamp: {isoformat(utcnow())}\n"
            f"Digits: {ctx.params.digits}\n"
        )
        with path.open("wb") as out:
            out.write(header.encode())
            try:
                compute_pi(
                    ctx.params.digits, out, progress=ctx.progress, memory_limit_bytes=ctx.memory_limit_bytes
                )
            except PiTooLargeError as exc:
                raise JobRefusedError(str(exc), code="too_large") from exc
            out.write(b"\n")
        return OutputFile(path, filename, "text/plain", {"digits": ctx.params.digits})
