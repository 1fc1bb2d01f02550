"""The adapters a Lambda builds from its settings, each made here once: the handlers' ``services()`` pick
the ones they need (the API, the dispatcher, the reaper and the upload verifier wire the same store, queue,
capacity counter and compute backend the same way)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from pijobs.shared import aws
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.compute import CloudFormationBackend
from pijobs.shared.hooks import WebhookStore
from pijobs.shared.queue import JobQueue
from pijobs.shared.stacks import StackLauncher
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore
from pijobs.shared.uploads import UploadStore


class Adapters:
    """Made on first use from ``settings`` (a pijobs.shared.settings model: the table, the queue, the
    limit each needs is read from it)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @cached_property
    def dynamodb(self) -> Any:
        return aws.client("dynamodb")

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.dynamodb, self.settings.table_name)

    @cached_property
    def capacity(self) -> CapacityCounter:
        limit = self.settings.max_active_stacks
        return CapacityCounter(self.dynamodb, self.settings.table_name, default_limit=limit)

    @cached_property
    def tenants(self) -> TenantStore:
        return TenantStore(self.dynamodb, self.settings.table_name)

    @cached_property
    def uploads(self) -> UploadStore:
        return UploadStore(self.dynamodb, self.settings.table_name)

    @cached_property
    def hooks(self) -> WebhookStore:
        return WebhookStore(self.dynamodb, self.settings.table_name)

    @cached_property
    def sqs(self) -> Any:
        return aws.client("sqs")

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(aws.client("sqs"), self.settings.queue_url)

    @cached_property
    def s3(self) -> Any:
        return aws.client("s3")

    @cached_property
    def presigner(self) -> Any:
        return aws.presigning_s3_client()

    def compute(
        self, *, role_arn: str | None = None, template_url: Callable[[str, str], str] | None = None
    ) -> CloudFormationBackend:
        """The job attempts' infrastructure (created with ``role_arn``, the platform's service role, from
        the template at ``template_url(function, version)``; without it, the backend only reads and ends)."""
        stacks = StackLauncher(aws.client("cloudformation"), role_arn=role_arn)
        return CloudFormationBackend(stacks, template_url=template_url)
