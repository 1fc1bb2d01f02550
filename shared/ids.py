"""What a job's id and an upload's id look like: one format, made and recognised here alone.

A leaf module (the standard library only). The API's path checks, the models, the OpenAPI document, the
stack names, the command line and the console's links use these; the templates' ``AllowedPattern`` and the
console's JavaScript are checked against ``ID_PATTERN`` by tests/unit/test_facts.py.
"""

from __future__ import annotations

import re
import uuid

ID_PATTERN = r"^[a-f0-9]{32}$"  # uuid4().hex
# What the command line takes for an id: a unique prefix of 4 or more of its digits (as git takes commits).
ID_PREFIX_PATTERN = r"^[a-f0-9]{4,31}$"
_ID = re.compile(ID_PATTERN)


def new_id() -> str:
    """A new job or upload id: 128 random bits, as 32 lowercase hex digits."""
    return uuid.uuid4().hex


def is_id(text: str) -> bool:
    """Whether ``text`` is a job's or an upload's id (never raises: any string may be asked about)."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None
