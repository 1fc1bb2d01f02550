"""``pijobs keys create|list|revoke``: API keys on the usage plan (the work is :mod:`pijobs.keys`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pijobs.cli.render import Output, key_columns
from pijobs.keys import create_api_key, find_usage_plan, list_api_keys, revoke_api_key
from pijobs.shared import aws


def register(subparsers: Any, output: argparse.ArgumentParser) -> None:
    keys = subparsers.add_parser("keys", help="API keys").add_subparsers(metavar="ACTION")
    plan_help = "default: the usage plan named pijobs*"
    create = keys.add_parser(
        "create", parents=[output], help="create an API key on the usage plan; prints its value last"
    )
    create.add_argument("name")
    create.add_argument("--usage-plan-id", help=plan_help)
    create.set_defaults(run=cmd_keys_create)
    listing = keys.add_parser(
        "list", parents=[output], help="the keys on the usage plan (ids and names, never values)"
    )
    listing.add_argument("--usage-plan-id", help=plan_help)
    listing.set_defaults(run=cmd_keys_list)
    revoke = keys.add_parser(
        "revoke", parents=[output], help="delete an API key (it stops working within seconds)"
    )
    revoke.add_argument("key_id", metavar="ID", help="the key's id, from pijobs keys list")
    revoke.add_argument("--usage-plan-id", help=plan_help)
    revoke.set_defaults(run=cmd_keys_revoke)


def cmd_keys_create(args: argparse.Namespace, out: Output) -> int:
    apigw = aws.client("apigateway")
    usage_plan = args.usage_plan_id or find_usage_plan(apigw)
    key_id, value = create_api_key(apigw, usage_plan, args.name)
    if out.json_mode:
        out.json({"id": key_id, "name": args.name, "usage_plan_id": usage_plan, "value": value})
        return 0
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    where = f" at {endpoint}" if endpoint else ""
    out.note(f"Created API key {args.name} (id {key_id}) on usage plan {usage_plan}{where}")
    out.line(value)
    return 0


def cmd_keys_list(args: argparse.Namespace, out: Output) -> int:
    apigw = aws.client("apigateway")
    keys = list_api_keys(apigw, args.usage_plan_id or find_usage_plan(apigw))
    out.either({"keys": keys}, lambda: out.table(keys, key_columns, empty="no API keys on the usage plan"))
    return 0


def cmd_keys_revoke(args: argparse.Namespace, out: Output) -> int:
    apigw = aws.client("apigateway")
    revoke_api_key(apigw, args.usage_plan_id or find_usage_plan(apigw), args.key_id)
    out.either({"revoked": args.key_id}, lambda: out.note(f"Revoked API key {args.key_id}"))
    return 0
