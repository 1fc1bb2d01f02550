"""DynamoDB's eventually consistent reads as they may answer on AWS: from a replica that has not seen the
latest writes yet.

moto answers every read from the one copy of a table it keeps, so a read that must see the write just made
(``ConsistentRead=True``) and one that need not look the same under moto. With ``LaggingReplica.lag()``, a
GetItem or BatchGetItem that is not consistent answers from the tables as they were at that moment, as a
lagging replica may; a consistent one answers from the tables as they are. (Queries of an index are
eventually consistent on AWS by design and answer as they are here.)
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.responses import DynamoHandler


class LaggingReplica:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._tables: dict[str, Any] | None = None
        for name, consistent in (("get_item", _get_is_consistent), ("batch_get_item", _batch_is_consistent)):
            monkeypatch.setattr(DynamoHandler, name, self._reader(getattr(DynamoHandler, name), consistent))

    def lag(self, region: str = "us-east-1") -> None:
        """From now on, reads that are not consistent do not see the writes made after this call."""
        self._tables = copy.deepcopy(dynamodb_backends[DEFAULT_ACCOUNT_ID][region].tables)

    def _reader(self, read: Any, consistent: Any) -> Any:
        replica = self

        def call(handler: DynamoHandler) -> Any:
            backend = handler.dynamodb_backend
            if replica._tables is None or consistent(handler.body):
                return read(handler)
            live, backend.tables = backend.tables, replica._tables
            try:
                return read(handler)
            finally:
                backend.tables = live

        return call


def _get_is_consistent(body: dict[str, Any]) -> bool:
    return bool(body.get("ConsistentRead"))


def _batch_is_consistent(body: dict[str, Any]) -> bool:
    return all(request.get("ConsistentRead") for request in body["RequestItems"].values())
