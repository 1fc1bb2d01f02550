"""moto's TransactWriteItems without a copy of the whole table per transaction.

moto backs up every table a transaction names (``copy.deepcopy`` of the table: all its items and its stream)
before it applies the first write, and puts the copy in the table's place when the transaction is cancelled.
The cost grows with the table: on the embedded stack, where every status change is a transaction, one took
100 ms at the median and over a second at the slowest with 20 jobs' worth of items, holding the DynamoDB lock
(pijobs.local.moto_server) the whole time, so every other request and the webhooks' latency waited on it.

``install()`` keeps moto's own transaction code (its conditions, checks and cancellation reasons) and changes
only what is saved for a cancellation: the items the transaction names, and the length of each table's
stream, put back when moto cancels or refuses the transaction. The table stays the same object.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

_MOTO_TRANSACT_WRITE_ITEMS = DynamoDBBackend.transact_write_items


class _NoTableCopies:
    """The ``copy`` module as moto's DynamoDB backend sees it, except that a table is not copied."""

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


@dataclass
class _Saved:
    """What a transaction may change: its items as they were (None: absent), each table's stream length."""

    items: list[tuple[Table, DynamoType, DynamoType | None, Item | None]] = field(default_factory=list)
    streams: dict[int, tuple[Table, int]] = field(default_factory=dict)

    def restore(self) -> None:
        for table, hash_key, range_key, item in reversed(self.items):
            holder: dict[Any, Any] = table.items[hash_key] if range_key is not None else table.items
            key = range_key if range_key is not None else hash_key
            if item is None:
                holder.pop(key, None)
            else:
                holder[key] = item
        for table, length in self.streams.values():
            if table.stream_shard is not None:
                del table.stream_shard.items[length:]


def _save(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> _Saved:
    saved = _Saved()
    for entry in transact_items:
        for op_type, op in entry.items():
            table = backend.tables.get(op.get("TableName", ""))
            if table is None:
                continue  # moto refuses the transaction before it writes anything of this table
            keys = op.get("Item") if op_type == "Put" else op.get("Key")
            try:
                hash_key, range_key = backend.get_keys_value(table, keys or {})
            except Exception:
                continue  # a malformed key: moto refuses it without writing it
            current = table.get_item(hash_key, range_key)
            saved.items.append((table, hash_key, range_key, copy.deepcopy(current)))
            if table.stream_shard is not None:
                saved.streams.setdefault(id(table), (table, len(table.stream_shard.items)))
    return saved


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    saved = _save(self, transact_items)
    try:
        _MOTO_TRANSACT_WRITE_ITEMS(self, transact_items)
    except BaseException:
        saved.restore()
        raise


def install() -> None:
    """From now on, in this process, moto's transactions save only the items they name (idempotent)."""
    dynamodb_models.copy = _NoTableCopies()  # type: ignore[assignment]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
