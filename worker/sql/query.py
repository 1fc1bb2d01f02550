"""The shape of an acceptable query, checked without an SQL engine (the API validates requests with it).

One statement, and it starts with SELECT or WITH. String literals, quoted identifiers and comments are
skipped, so a ';' or a keyword inside them counts for nothing. This is the early refusal at submit; the
worker checks again with DuckDB's own parser, and the engine's configuration (external access off, locked)
is what actually keeps a query to its inputs.
"""

from __future__ import annotations

import re

MAX_QUERY_CHARS = 100_000
LEADING_KEYWORDS = ("select", "with")
_WORD = re.compile(r"[A-Za-z_]+")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


class QueryShapeError(ValueError):
    """The text is not one SELECT/WITH statement; the message is the customer's."""


def check_query_shape(query: str) -> str:
    """The query without a trailing ';', or QueryShapeError naming the problem."""
    code, semicolon = _code_outside_literals(query)
    if semicolon is not None and code[semicolon[0] + 1 :].strip(" \t\r\n;"):
        raise QueryShapeError("must be exactly one statement (there is more after ';')")
    first = _WORD.match(code.lstrip(" \t\r\n("))
    if first is None or first.group().lower() not in LEADING_KEYWORDS:
        raise QueryShapeError("must be a SELECT or WITH statement")
    return (query[: semicolon[1]] if semicolon is not None else query).strip()


def _code_outside_literals(text: str) -> tuple[str, tuple[int, int] | None]:
    """The text with literals, quoted names and comments blanked out, and where the first ';' outside them
    is (in that code, in the text), None if there is none."""
    out: list[str] = []
    i, n = 0, len(text)
    first_semicolon: tuple[int, int] | None = None
    while i < n:
        char = text[i]
        if char in "'\"":
            end = _closing_quote(text, i + 1, char)
            out.append(" ")
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise QueryShapeError("has a comment that is not closed")
            i = end + 2
            out.append(" ")
        elif char == "$" and (tag := _DOLLAR_TAG.match(text, i)):
            end = text.find(tag.group(), tag.end())
            if end < 0:
                raise QueryShapeError("has a $-quoted string that is not closed")
            i = end + len(tag.group())
            out.append(" ")
        else:
            if char == ";" and first_semicolon is None:
                first_semicolon = (len(out), i)
            out.append(char)
            i += 1
    return "".join(out), first_semicolon


def _closing_quote(text: str, start: int, quote: str) -> int:
    i = start
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise QueryShapeError("has a quoted string or name that is not closed")
        if text.startswith(quote * 2, end):  # '' inside '...' is one quote
            i = end + 2
            continue
        return end
