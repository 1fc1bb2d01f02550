"""The ``pijobs`` command: parses the command line, runs one command, turns a failure into one line and an
exit code (:mod:`pijobs.cli.failure`).

Each command group has its module here (``local``: up, demo, openapi; ``keys``; ``customer``; ``ops``;
``deploy``), which only parses and prints: the work is in the library (:mod:`pijobs.client`,
:mod:`pijobs.customer`, :mod:`pijobs.ops`, :mod:`pijobs.keys`, :mod:`pijobs.deploy`), the printing in
:mod:`pijobs.cli.render`. A command is ``run(args, out) -> exit code``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from pijobs.cli import customer, deploy, keys, local, ops, webhooks
from pijobs.cli.failure import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, describe_failure, exit_code
from pijobs.cli.render import Output
from pijobs.client import ApiError, UploadRefusedError

__all__ = ["build_parser", "describe_failure", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    out = Output(json_mode=getattr(args, "json_output", False), wide=getattr(args, "wide", False))
    try:
        return int(args.run(args, out) or EXIT_OK)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say. Point stdout at /dev/null so that the
        # interpreter's final flush does not fail a second time.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        if out.json_mode and isinstance(exc, ApiError) and exc.body:
            out.json(exc.body)  # the API's error envelope, for a script
        elif out.json_mode and isinstance(exc, UploadRefusedError) and exc.upload:
            out.json(exc.upload)
        out.error(describe_failure(exc))
        return exit_code(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pijobs",
        description="On-demand compute behind one REST call (business functions such as pi).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"pijobs {local.version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("PIJOBS_DEBUG") == "1",
        help="show the traceback of a failure (also PIJOBS_DEBUG=1)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    output = output_options()
    local.register(commands, output)
    keys.register(commands, output)
    customer.register(commands, output)
    webhooks.register(commands, output)
    ops.register(commands, output)
    deploy.register(commands, output)
    _no_abbreviations(parser)
    return parser


def output_options() -> argparse.ArgumentParser:
    """``--json`` and ``--wide``, the same on every command that prints something."""
    output = argparse.ArgumentParser(add_help=False)
    group = output.add_argument_group("output")
    group.add_argument(
        "--json", dest="json_output", action="store_true", help="print JSON only (messages go to stderr)"
    )
    group.add_argument(
        "--wide", action="store_true", help="every column, whole (by default tables fit the terminal)"
    )
    return output


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """``--digit`` is not ``--digits``: every parser and subparser matches options exactly."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)
