"""``pijobs webhooks add|list|remove|test|deliveries|rotate`` and ``pijobs listen``: parsing here, the work in
:mod:`pijobs.client` and :mod:`pijobs.listen`, the tables in :mod:`pijobs.cli.render`."""

from __future__ import annotations

import argparse
import os
import threading
from typing import Any

from pijobs import customer
from pijobs.cli.customer import connect
from pijobs.cli.failure import EXIT_OK
from pijobs.cli.render import Column, Output, when
from pijobs.errors import UsageError
from pijobs.listen import SECRET_ENV, Listener, Received, describe


def register(subparsers: Any, output: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False, parents=[output])
    group = common.add_argument_group("API")
    group.add_argument("--api-url", default=None, help=f"base URL of the API (default: ${customer.URL_ENV})")
    group.add_argument("--api-key", default=None, help=f"API key (default: ${customer.KEY_ENV})")

    hooks = subparsers.add_parser(
        "webhooks",
        parents=[common],
        help="your webhooks: add URL, list, remove ID, test ID, deliveries ID, rotate ID",
        usage="pijobs webhooks add URL [--events TYPE,...] [--description TEXT] | list | "
        "remove ID | test ID | deliveries ID | rotate ID",
    )
    hooks.add_argument("action", choices=["add", "list", "remove", "test", "deliveries", "rotate"])
    hooks.add_argument(
        "target", nargs="?", metavar="URL_OR_ID", help="add: the URL; others: the webhook's id"
    )
    hooks.add_argument("--events", help="add: the event types, comma-separated (default: all)")
    hooks.add_argument("--description", help="add: a note for yourself")
    hooks.set_defaults(run=cmd_webhooks)

    listen = subparsers.add_parser(
        "listen",
        parents=[output],
        help="a local webhook receiver on 127.0.0.1: verifies each delivery's signature and prints it",
    )
    listen.add_argument("--port", type=int, default=8787, help="the port on 127.0.0.1 (default 8787)")
    listen.add_argument(
        "--secret",
        action="append",
        default=[],
        help=f"a webhook's secret (repeatable; default: ${SECRET_ENV})",
    )
    listen.set_defaults(run=cmd_listen)


def webhook_columns(hooks: list[dict[str, Any]], *, wide: bool) -> list[Column]:
    return [
        Column("WEBHOOK", lambda h: str(h.get("webhook_id", ""))),
        Column("STATE", lambda h: str(h.get("state", ""))),
        Column("URL", lambda h: str(h.get("url", "")), flex=True),
        Column("EVENTS", lambda h: ",".join(h.get("events") or []), flex=True, drop=1),
    ]


def delivery_columns(rows: list[dict[str, Any]], *, wide: bool) -> list[Column]:
    return [
        Column("EVENT", lambda d: str(d.get("event_id", "")), flex=True, drop=2),
        Column("TYPE", lambda d: str(d.get("type", ""))),
        Column("STATE", lambda d: str(d.get("state", ""))),
        Column("TRIES", lambda d: str(d.get("attempts", "")), right=True),
        Column("ANSWER", lambda d: str(d.get("response_status") or d.get("error") or ""), drop=3),
        Column("MS", lambda d: str(d.get("duration_ms") or ""), right=True, drop=1),
        Column(
            "NEXT", lambda d: when(d.get("next_attempt_at"), wide=wide) if d.get("next_attempt_at") else ""
        ),
    ]


def cmd_webhooks(args: argparse.Namespace, out: Output) -> int:
    if args.action != "list" and not args.target:
        raise UsageError(
            f"pijobs webhooks {args.action} needs {'a URL' if args.action == 'add' else 'an id'}"
        )
    client = connect(args)
    if args.action == "add":
        events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
        made = client.add_webhook(args.target, events=events, description=args.description)
        if out.json_mode:
            out.json(made)
        else:
            out.line(f"webhook {made['webhook_id']} -> {made['url']}")
            out.line(f"secret  {made['secret']}")
            out.note("the secret is shown this once: keep it where your receiver reads it")
        return EXIT_OK
    if args.action == "list":
        page = client.list_webhooks()
        if out.json_mode:
            out.json(page)
        else:
            out.table(page.get("webhooks", []), webhook_columns, empty="no webhooks")
        return EXIT_OK
    calls = {
        "remove": client.remove_webhook,
        "test": client.test_webhook,
        "deliveries": client.webhook_deliveries,
        "rotate": client.rotate_webhook_secret,
    }
    answer = calls[args.action](args.target)
    if out.json_mode:
        out.json(answer)
    elif args.action == "deliveries":
        out.table(answer.get("deliveries", []), delivery_columns, empty="no deliveries yet")
    elif args.action == "test":
        out.line(f"test event {answer['event_id']} queued; see: pijobs webhooks deliveries {args.target}")
    elif args.action == "rotate":
        out.line(f"secret  {answer['secret']}")
        out.note(f"the previous secret also signs until {answer['previous_until']}")
    else:
        out.line(f"removed {answer['webhook_id']}")
    return EXIT_OK


def cmd_listen(args: argparse.Namespace, out: Output) -> int:
    secrets = list(args.secret) or [s for s in [os.environ.get(SECRET_ENV, "")] if s]
    if not secrets:
        raise UsageError(f"pass --secret whsec_... (or set ${SECRET_ENV}): the secret `webhooks add` showed")

    def show(received: Received) -> None:
        if out.json_mode and received.payload is not None:
            out.json(received.payload)
        else:
            out.line(describe(received))

    with Listener(secrets, show, port=args.port) as listener:
        out.note(f"listening on {listener.url} (Ctrl-C stops)")
        threading.Event().wait()
    return EXIT_OK
