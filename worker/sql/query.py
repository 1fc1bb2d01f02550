"""The shape of an acceptable query, checked without an SQL engine (the API validates requests with it).

One statement, a query: it starts with SELECT or WITH, and a WITH's common table expressions lead to a
SELECT (FROM, VALUES, TABLE or a parenthesised query), never to an INSERT, UPDATE or DELETE. String
literals (also E'...' with its backslash escapes, and a string continued on the next line), quoted
identifiers and comments (also nested ones, and a ``--`` comment that a carriage return ends) are read as
DuckDB's lexer reads them, so a ';' or a keyword inside them counts for nothing. A query may not name the
engine's catalog or settings (``duckdb_settings()``, ``current_setting()``, ``sqlite_master``,
``information_schema``, ``query()``...): they show the worker's paths and limits, not the customer's data.
A ``PIVOT`` (or ``PIVOT_WIDER``) statement inside the query must list the values of each ``ON`` column
(``ON x IN ('a', 'b')``): without them, DuckDB reads it as two statements, a ``CREATE TYPE`` of the values
found and the SELECT, which the worker refuses. (``UNPIVOT`` and the ``t PIVOT (... FOR x IN ...)`` form
always need no such statement.)

This is the refusal at submit; the worker runs the same check, then DuckDB's own parser (exactly one
SELECT), and the engine's configuration (external access off, locked) is what keeps a query to its inputs.
"""

from __future__ import annotations

import re

MAX_QUERY_CHARS = 100_000
LEADING_KEYWORDS = ("select", "with")
# What may follow a WITH's common table expressions: DuckDB parses each of these as a SELECT.
AFTER_CTES = ("select", "from", "values", "table", "(")
# Names that read the engine's own state. A prefix covers every catalog function of that family; the pg_
# and information_schema views show the same catalog (tests/unit/test_sql_request.py checks the list
# against the installed DuckDB).
CATALOG_PREFIXES = ("duckdb_", "pragma_", "sqlite_")
CATALOG_NAMES = frozenset(
    {
        "information_schema",
        "pg_catalog",
        "pg_am",
        "pg_attrdef",
        "pg_attribute",
        "pg_class",
        "pg_collation",
        "pg_constraint",
        "pg_database",
        "pg_depend",
        "pg_description",
        "pg_enum",
        "pg_index",
        "pg_indexes",
        "pg_namespace",
        "pg_prepared_statements",
        "pg_proc",
        "pg_sequence",
        "pg_sequences",
        "pg_settings",
        "pg_tables",
        "pg_tablespace",
        "pg_type",
        "pg_views",
        "pg_get_viewdef",
    }
)
# Functions that read settings or variables, or run SQL from a string (which no check here could see).
DENIED_CALLS = frozenset(
    {
        "current_setting",
        "getvariable",
        "getenv",
        "query",
        "query_table",
        "which_secret",
        "json_execute_serialized_sql",
    }
)
# PIVOT statement forms; the words that end a PIVOT's ON clause; what starts a query in parentheses.
PIVOT_WORDS = ("pivot", "pivot_wider")
_PIVOT_CLAUSE_END = ("using", "group", "order", "limit")
_SUBQUERY_START = ("select", "with", "from", "values", "table", "pivot", "pivot_wider", "unpivot", "(")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*|\S")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
# After a string, whitespace with a newline (and "--" comments) before another quote continues the string.
_CONTINUATION = re.compile(r"[ \t\f]*[\n\r](?:[ \t\n\r\f]|--[^\n\r]*[\n\r])*'")


class QueryShapeError(ValueError):
    """The text is not one SELECT/WITH statement; the message is the customer's."""


def check_query_shape(query: str) -> str:
    """The query without a trailing ';', or QueryShapeError naming the problem."""
    code, semicolon, quoted = _code_outside_literals(query)
    if semicolon is not None and code[semicolon[0] + 1 :].strip(" \t\r\n;"):
        raise QueryShapeError("must be exactly one statement (there is more after ';')")
    first = _WORD.match(code, len(code) - len(code.lstrip(" \t\r\n\f(")))
    if first is None or first.group().lower() not in LEADING_KEYWORDS:
        raise QueryShapeError("must be a SELECT or WITH statement")
    if first.group().lower() == "with":
        main = _statement_after_ctes(code[first.end() :])
        if main not in AFTER_CTES:
            raise QueryShapeError("must be a SELECT or WITH statement (a WITH may lead only to a SELECT)")
    denied = _engine_names(code, quoted)
    if denied:
        raise QueryShapeError(f"may read only its inputs, not the engine's settings or catalog ({denied})")
    if _pivot_without_values(code):
        raise QueryShapeError(
            "must list the values of each PIVOT column, as in PIVOT t ON x IN ('a', 'b') USING sum(y) "
            "(without them the engine needs a statement of its own to find them)"
        )
    return (query[: semicolon[1]] if semicolon is not None else query).strip()


def _statement_after_ctes(code: str) -> str | None:
    """What follows ``WITH name [(columns)] [USING KEY (...)] AS [NOT] [MATERIALIZED] (body), ...``: the
    first word of the main statement, ``(`` for a parenthesised one, None if nothing follows."""
    depth = 0
    previous = ""  # the last token at depth 0
    opening_body = body_closed = False
    for match in _TOKEN.finditer(code):
        token = match.group().lower()
        if depth == 0 and body_closed and token != ",":
            return token
        if token == "(":
            if depth == 0:
                opening_body = previous in ("as", "materialized")
            depth += 1
        elif token == ")":
            depth -= 1
            if depth == 0 and opening_body:
                body_closed = True
            if depth < 0:
                return None
        elif depth == 0:
            body_closed = False
        if depth == 0 and token != ")":
            previous = token
    return None


def _pivot_without_values(code: str) -> bool:
    """Whether a PIVOT statement in ``code`` has an ON column without a list of values (``IN (...)``)."""
    tokens = [m.group().lower() for m in _TOKEN.finditer(code)]
    for at, token in enumerate(tokens):
        if token not in PIVOT_WORDS:
            continue
        if tokens[at + 1 : at + 2] == ["("] and "for" in _level(tokens, at + 2):
            continue  # t PIVOT (sum(y) FOR x IN (...)): the grammar itself wants the values
        clause = _on_clause(_level(tokens, at + 1, spans=True))
        if clause is not None and not all(_lists_values(item) for item in _split(clause)):
            return True
    return False


def _level(tokens: list[str], start: int, *, spans: bool = False) -> list[str]:
    """The tokens from ``start`` to the end of their parenthesis (or of the text), those inside nested
    parentheses left out, or with ``spans``, kept (each nested group then counts as a part of its token)."""
    out: list[str] = []
    depth = 0
    for token in tokens[start:]:
        if token == ")":
            depth -= 1
            if depth < 0:
                break
        if depth == 0 or spans:
            out.append(token if depth == 0 else f" {token}")  # a nested token is marked by a space
        if token == "(":
            depth += 1
    return out


def _on_clause(level: list[str]) -> list[str] | None:
    """A PIVOT's ON columns (nested tokens marked), or None without ON. The pivot's ON is the last one
    before the first USING, GROUP, ORDER or LIMIT that follows an ON: a JOIN in the pivoted source may have
    an ON of its own before it."""
    ons = [i for i, token in enumerate(level) if token == "on"]
    if not ons:
        return None
    end = next((i for i in range(ons[0], len(level)) if level[i] in _PIVOT_CLAUSE_END), len(level))
    start = max(i for i in ons if i < end)
    return level[start + 1 : end]


def _split(clause: list[str]) -> list[list[str]]:
    items: list[list[str]] = [[]]
    for token in clause:
        if token == ",":
            items.append([])
        else:
            items[-1].append(token)
    return items


def _lists_values(item: list[str]) -> bool:
    """``x IN (v, ...)``: an IN at the item's own level, then a parenthesis that does not open a query."""
    for i, token in enumerate(item[:-2]):
        if token == "in" and item[i + 1] == "(":
            return item[i + 2].lstrip(" ") not in _SUBQUERY_START
    return False


def _engine_names(code: str, quoted: list[tuple[str, int]]) -> str:
    """The first name of the engine's catalog or settings that the query uses, "" if none. ``quoted`` are
    the quoted names with where each stands in ``code``."""
    names = [(m.group(), m.end()) for m in _WORD.finditer(code)] + [(name, at + 1) for name, at in quoted]
    for name, end in names:
        called = code[end:].lstrip(" \t\r\n\f").startswith("(")
        if _is_catalog(name.lower()) or (called and name.lower() in DENIED_CALLS):
            return name
    return ""


def _is_catalog(name: str) -> bool:
    return name.startswith(CATALOG_PREFIXES) or name in CATALOG_NAMES


def _code_outside_literals(text: str) -> tuple[str, tuple[int, int] | None, list[tuple[str, int]]]:
    """The text with literals, quoted names and comments blanked out; where the first ';' outside them is
    (in that code, in the text), None if there is none; and the quoted names, each with its place in the
    code."""
    out: list[str] = []
    quoted: list[tuple[str, int]] = []
    i, n = 0, len(text)
    first_semicolon: tuple[int, int] | None = None
    while i < n:
        char = text[i]
        starts_token = i == 0 or not _is_identifier_char(text[i - 1])
        if char == "'":
            i = _string_end(text, i + 1, escapes=False)
            out.append(" ")
        elif char in "eE" and text.startswith("'", i + 1) and starts_token:
            i = _string_end(text, i + 2, escapes=True)  # E'...': a backslash escapes the next character
            out.append(" ")
        elif char == '"':
            end = _closing_quote(text, i + 1, '"')
            quoted.append((text[i + 1 : end].replace('""', '"'), len(out)))
            out.append(" ")
            i = end + 1
        elif text.startswith("--", i):
            match = re.compile(r"[\n\r]").search(text, i)
            i = n if match is None else match.start()
            out.append(" ")
        elif text.startswith("/*", i):
            i = _comment_end(text, i)
            out.append(" ")
        elif char == "$" and starts_token and (tag := _DOLLAR_TAG.match(text, i)):
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
    return "".join(out), first_semicolon, quoted


def _is_identifier_char(char: str) -> bool:
    return char.isalnum() or char in "_$" or ord(char) >= 128


def _string_end(text: str, start: int, *, escapes: bool) -> int:
    """The index after a string that starts at ``start`` (after its quote), continuations included."""
    while True:
        end = _closing_quote(text, start, "'", escapes=escapes)
        continued = _CONTINUATION.match(text, end + 1)
        if continued is None:
            return end + 1
        start = continued.end()


def _comment_end(text: str, start: int) -> int:
    """The index after a /* comment */ that starts at ``start``; comments nest."""
    depth, i = 0, start
    while True:
        opening, closing = text.find("/*", i), text.find("*/", i)
        if closing < 0:
            raise QueryShapeError("has a comment that is not closed")
        if 0 <= opening < closing:
            depth, i = depth + 1, opening + 2
            continue
        depth, i = depth - 1, closing + 2
        if depth == 0:
            return i


def _closing_quote(text: str, start: int, quote: str, *, escapes: bool = False) -> int:
    i = start
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise QueryShapeError("has a quoted string or name that is not closed")
        if escapes:
            backslashes = text.find("\\", i, end)
            if backslashes >= 0:
                i = backslashes + 2  # the escaped character, whatever it is, is part of the string
                continue
        if text.startswith(quote * 2, end):  # '' inside '...' is one quote
            i = end + 2
            continue
        return end
