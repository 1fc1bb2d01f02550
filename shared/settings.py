"""Settings read from the environment, one pydantic model per process kind."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pijobs.shared.capacity import MAX_LIVE_JOBS
from pijobs.shared.fairshare import HALF_THE_SLOTS
from pijobs.shared.functions import Registry, load_registry, parse_enabled
from pijobs.shared.retry import Backoff

NonEmpty = Annotated[str, Field(min_length=1)]
SettingsT = TypeVar("SettingsT", bound="_EnvSettings")


class _EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def from_env(cls: type[SettingsT], environ: Mapping[str, str] | None = None) -> SettingsT:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            key = field.alias or f"PIJOBS_{name.upper()}"
            if key in env and env[key] != "":
                values[name] = env[key]
        return cls.model_validate(values)


def _json_object(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg}") from exc
    return value


class StoreSettings(_EnvSettings):
    table_name: NonEmpty
    max_active_stacks: int = Field(default=10, ge=1, le=MAX_LIVE_JOBS)  # the capacity item's ceiling
    # The operator's choice of business functions: "pi,word-count"; empty or "*" is every installed one.
    enabled_functions: str | None = None
    # Per-function limits, {"pi": {"max_digits": 10000000}}; a function's defaults apply where unset.
    function_limits: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _function_limits = field_validator("function_limits", mode="before")(_json_object)

    def functions(self) -> Registry:
        return load_registry(parse_enabled(self.enabled_functions), self.function_limits)


class AttemptSettings(StoreSettings):
    """How often an infrastructure failure may send a job round again (dispatcher, reaper and the
    worker channel)."""

    max_attempts: int = Field(default=3, ge=1, le=10)


class ApiSettings(AttemptSettings):
    queue_url: NonEmpty
    results_bucket: NonEmpty
    result_url_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    result_expiry_days: int = Field(default=7, ge=1)  # the results bucket's lifecycle (ResultExpiryDays)
    page_size: int = Field(default=20, ge=1, le=100)
    job_ttl_days: int = Field(default=90, ge=1)
    # Uploads (POST /uploads): the largest file one presigned POST takes (S3's own limit for one POST is
    # 5 GiB), how long that POST works, and the days the file is kept (the bucket's lifecycle on uploads/,
    # UploadExpiryDays).
    max_upload_bytes: int = Field(default=5 * (1 << 30), ge=1, le=5 * (1 << 30))
    upload_url_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    upload_expiry_days: int = Field(default=7, ge=1)
    # The worker channel (api_handler/channel.py): how long the input GETs that ``start`` answers work (they
    # must outlast the download), and the result POST that ``output`` answers (the upload), and the largest
    # result one POST takes.
    input_url_seconds: int = Field(default=3600, ge=60, le=12 * 3600)
    result_post_seconds: int = Field(default=3600, ge=60, le=12 * 3600)
    max_result_bytes: int = Field(default=5 * (1 << 30), ge=1, le=5 * (1 << 30))
    # Webhooks (docs/webhooks.md): the sender's queue (POST /webhooks/{id}/test) and whether http to this
    # machine's loopback may be registered (the embedded stack's receivers; never on AWS).
    webhooks_queue_url: str | None = None
    webhook_allow_loopback: bool = False


class RetrySettings(AttemptSettings):
    """What deciding a retry needs: the queue to send the job back to, attempts and backoff."""

    queue_url: NonEmpty
    retry_base_seconds: int = Field(default=30, ge=0, le=900)
    # While jobs wait for capacity, one tick message every this many seconds admits them into freed slots.
    admission_tick_seconds: int = Field(default=5, ge=1, le=900)


class DispatcherSettings(RetrySettings):
    artifacts_bucket: NonEmpty  # where `pijobs package` put every function's template and worker
    artifacts_url: NonEmpty  # the bucket's https URL, which CloudFormation reads templates from
    cfn_role_arn: str | None = None
    stack_parameters: dict[str, str] = Field(default_factory=dict)
    # Each tenant's own cap on live stacks, unless an operator set one for it: -1 (HALF_THE_SLOTS) half of
    # MaxActiveStacks, at least 1; 0: none, only MaxActiveStacks (shared/fairshare.py, default_owner_cap).
    max_active_stacks_per_owner: int = Field(default=HALF_THE_SLOTS, ge=HALF_THE_SLOTS)
    # How long the presigned GET of a job's worker artifact works (its instance downloads it at boot, so it
    # must outlast the provisioning: the reaper allows provisioning_timeout_seconds, 900 by default). A
    # presigned URL also ends when the credentials that signed it do (the dispatcher's role session).
    artifact_url_seconds: int = Field(default=3600, ge=900, le=12 * 3600)

    _stack_parameters = field_validator("stack_parameters", mode="before")(_json_object)

    def template_url(self, key: str) -> str:
        return f"{self.artifacts_url.rstrip('/')}/{key}"


class ReaperSettings(RetrySettings):
    heartbeat_timeout_seconds: int = Field(default=180, ge=1)
    provisioning_timeout_seconds: int = Field(default=900, ge=1)
    vanished_grace_seconds: int = Field(default=60, ge=0)
    requeue_after_seconds: int = Field(default=900, ge=1)
    primary_stack_name: NonEmpty = "pijobs"  # the Stack dimension of the metrics it emits (shared/metrics.py)
    # Finished jobs are counted for the metrics this long after they finished (the index is eventually
    # consistent), each in exactly one sweep.
    metrics_lag_seconds: int = Field(default=15, ge=0, le=300)


class WorkerSettings(_EnvSettings):
    """The worker's, on the job's instance: the API and the token of its attempt (no AWS anything)."""

    api_url: NonEmpty
    worker_token: SecretStr
    instance_id: str | None = None
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    # An outage of the channel or of storage the worker waits out (backoff with jitter) before it gives up.
    transient_base_seconds: float = Field(default=0.5, ge=0)
    transient_cap_seconds: float = Field(default=15.0, ge=0)
    transient_total_seconds: float = Field(default=120.0, ge=0, le=900)

    def backoff(self) -> Backoff:
        return Backoff(self.transient_base_seconds, self.transient_cap_seconds, self.transient_total_seconds)


class WebhookSettings(StoreSettings):
    """The webhook notifier and sender (api_handler/notifier.py)."""

    webhooks_queue_url: NonEmpty
    public_api_url: str = ""  # the API's URL, for the links in each payload
    webhook_allow_loopback: bool = False
    # Seconds before each retry, comma-separated (shared/webhooks.py's RETRY_SCHEDULE unless set).
    webhook_retry_schedule: str | None = None
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    event_bus: str | None = None  # where every state change is published for operators (EventBridge)


class VerifierSettings(_EnvSettings):
    """The upload verifier (dispatcher/verifier.py): the table of the upload records and the bucket."""

    table_name: NonEmpty
    results_bucket: NonEmpty
