"""moto's DynamoDB, fast enough for the embedded stack: queries that do not sort the whole table, answers
written without moto's generic serializer.

**Queries.** moto reads a table for a query through ``Table.all_items()``, which gathers every item of the
table and sorts them by their keys (``DynamoType`` comparisons, each recomputing its value in Python), then
keeps the matches and sorts those again by the index's keys. The first sort decides nothing: the second orders
the matches by the index's keys and then the table's, which no two items share. On the embedded stack it was
the largest single cost: a profile of 200 jobs with webhooks spent a quarter of the process's time holding the
interpreter in that sort, every query (the fair-share admission's waiting jobs, a job's attempts, an owner's
webhooks) behind the DynamoDB lock (pijobs.local.moto_server) while it ran.

``install()`` keeps moto's own query code (its key conditions, filters, pages and limits) and changes only
what ``all_items()`` gives it during a query: for a query on the table's own key just that key's items; for
one on an index the items whose string key attributes equal the query's (moto compares each item's with
``DynamoType`` objects, whose every comparison recomputes both values in Python: at 500 jobs an index
query's walk through the table was still a tenth of the process's time), unsorted. moto still checks all its
conditions on what it is given: this leaves out only items it would leave out. Everything else (scans, whose
pages follow the sorted order) still gets moto's sorted list.

**Answers.** moto builds each answer as plain dicts (``DynamoResult``) and then walks the operation's output
shape from botocore's model to write it, member by member: after the sort, the largest cost left (a sixth of
the process's time at 200 jobs), and all of it inside the DynamoDB lock. For the item operations, whose
answers are attribute values, counts and keys, ``json.dumps`` of the same dicts is the same document; where an
answer holds anything JSON does not write as the shape does (binary values, times) moto's serializer still
writes it. (A None member is left out, as the serializer leaves it out.)
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

from moto.core.serialize import JSONSerializer
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoResult

_MOTO_QUERY = Table.query
_MOTO_ALL_ITEMS = Table.all_items
_QUERY_PARAMETERS = inspect.signature(_MOTO_QUERY)
_querying = threading.local()


def _unsorted(table: Table) -> list[Item]:
    if not table.range_key_attr:
        return list(table.items.values())  # type: ignore[arg-type]  # hash key -> item without a range key
    return [item for by_range in table.items.values() for item in by_range.values()]


def _of_key(table: Table, hash_key: DynamoType) -> list[Item]:
    found: Any = table.items.get(hash_key)
    if found is None:
        return []
    return list(found.values()) if table.range_key_attr else [found]


def _matching(table: Table, conditions: list[tuple[str, DynamoType]]) -> list[Item]:
    """The table's items, unsorted, whose attributes equal each string of ``conditions`` (a string's
    ``DynamoType`` equality is its type's and its text's)."""
    strings = [(name, value.value) for name, value in conditions if value.type == "S"]
    found = _unsorted(table)
    for name, text in strings:
        found = [
            item
            for item in found
            if (value := item.attrs.get(name)) is not None and value.type == "S" and value.value == text
        ]
    return found


def all_items(self: Table) -> list[Item]:
    reader: tuple[Table, Callable[[], list[Item]]] | None = getattr(_querying, "reader", None)
    if reader is not None and reader[0] is self:
        return reader[1]()
    return _MOTO_ALL_ITEMS(self)


def query(self: Table, hash_key: DynamoType | None, *args: Any, **kwargs: Any) -> Any:
    arguments = _QUERY_PARAMETERS.bind(self, hash_key, *args, **kwargs).arguments
    index_name, conditions = arguments.get("index_name"), arguments.get("hash_key_conditions") or []
    if hash_key is not None and not index_name:
        reader: Callable[[], list[Item]] = lambda: _of_key(self, hash_key)  # noqa: E731
    elif index_name:
        reader = lambda: _matching(self, conditions)  # noqa: E731
    else:
        reader = lambda: _unsorted(self)  # noqa: E731
    outer = getattr(_querying, "reader", None)
    _querying.reader = (self, reader)
    try:
        return _MOTO_QUERY(self, hash_key, *args, **kwargs)
    finally:
        _querying.reader = outer


_MOTO_EXECUTE_RESULT = DynamoResult.execute_result
_ITEM_OPERATIONS = frozenset(
    {"GetItem", "BatchGetItem", "Query", "Scan", "PutItem", "UpdateItem", "DeleteItem", "TransactGetItems"}
)  # moto's other DynamoDB answers are small, or tables' descriptions (with times)
_JSON_SCALARS = (str, int, float)  # bool is an int


class _NotPlain(Exception):
    pass


def _plain(value: Any) -> Any:
    """``value`` in JSON's own types all the way down, its None members left out as the serializer leaves
    them out of a structure; raises _NotPlain at anything else (bytes, a time)."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise _NotPlain
        return {key: _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, _JSON_SCALARS):
        return value
    raise _NotPlain


def execute_result(self: DynamoResult, context: Any) -> Any:
    operation = context.operation_model
    if operation.name in _ITEM_OPERATIONS:
        try:
            body = json.dumps(_plain(self.result))
        except _NotPlain:
            return _MOTO_EXECUTE_RESULT(self, context)
        version = context.service_model.metadata.get("jsonVersion", "1.0")
        headers = {"Content-Type": JSONSerializer.APPLICATION_AMZ_JSON.format(version=version)}
        return operation.http.get("responseCode", 200), headers, body
    return _MOTO_EXECUTE_RESULT(self, context)


def install() -> None:
    """From now on, in this process, moto's queries read only what they can match and its item operations'
    answers are written directly (idempotent)."""
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    DynamoResult.execute_result = execute_result  # type: ignore[method-assign,assignment]
