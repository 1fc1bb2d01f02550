"""Why a job did not succeed: the codes of a job's ``error`` (and of its failed attempts' ``history``).

The platform's own codes live here, once; each business function declares the codes its ``run`` refuses
a job with (``BusinessFunction.error_codes``). The OpenAPI document lists both as the enum of
``error.code``, and tests/unit/test_facts.py checks that no module spells a platform code itself.
A leaf module: the standard library only.
"""

from __future__ import annotations

from enum import Enum


class JobErrorCode(str, Enum):
    # the customer's own doing
    CANCELLED = "cancelled"
    # before the job ran
    ENQUEUE_FAILED = "enqueue_failed"  # the API could not queue it: submit it again
    FUNCTION_UNAVAILABLE = "function_unavailable"  # its function was switched off while it waited
    # an attempt's infrastructure: QUEUED again while attempts remain (shared/attempts.py)
    STACK_CREATE_FAILED = "stack_create_failed"
    STACK_FAILED = "stack_failed"
    STACK_VANISHED = "stack_vanished"
    PROVISIONING_TIMEOUT = "provisioning_timeout"
    WORKER_LOST = "worker_lost"
    RESULT_UPLOAD_FAILED = "result_upload_failed"
    INPUT_UNAVAILABLE = "input_unavailable"
    # on the instance
    INPUT_CORRUPT = "input_corrupt"  # an input is not the upload the job was accepted with
    FUNCTION_ERROR = "function_error"  # the function broke its contract (a bug in the plug-in)
    WORKER_FAILED = "worker_failed"  # anything else on the instance
    REFUSED = "refused"  # a function's refusal without a code of its own
    # the clock
    DEADLINE_EXCEEDED = "deadline_exceeded"
