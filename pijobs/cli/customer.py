"""The customer's commands: functions, submit, status, list, result, cancel, upload, uploads, logs — the REST
API from a terminal. Parsing here; the work in :mod:`pijobs.client` and :mod:`pijobs.customer`; the printing
in :mod:`pijobs.cli.render`.

Each takes ``--api-url`` / ``--api-key`` (default ``$PIJOBS_API_URL`` / ``$PIJOBS_API_KEY``), ``--json``
(stdout carries the API's JSON and nothing else; progress and messages go to stderr) and, where it prints a
table, ``--wide``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pijobs import customer
from pijobs.cli.failure import EXIT_FAILED, EXIT_OK
from pijobs.cli.render import (
    Output,
    eta_text,
    function_columns,
    job_columns,
    progress_state,
    upload_columns,
)
from pijobs.client import IntegrityError, PijobsClient
from pijobs.errors import OperationError, UsageError
from pijobs.plugins import check_plugin as check


def register(subparsers: Any, output: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False, parents=[output])
    group = common.add_argument_group("API")
    group.add_argument("--api-url", default=None, help=f"base URL of the API (default: ${customer.URL_ENV})")
    group.add_argument(
        "--api-key",
        default=None,
        help=f"API key (default: ${customer.KEY_ENV}; the variable keeps it out of ps)",
    )

    functions = subparsers.add_parser(
        "functions",
        parents=[common],
        help="the business functions offered, with their parameters; check PATH: a plug-in, before packaging",
        usage="pijobs functions [options] | pijobs functions check PATH [--no-lint]",
    )
    functions.add_argument("action", nargs="?", choices=["check"], help="check a plug-in (no API needed)")
    functions.add_argument("path", nargs="?", type=Path, metavar="PATH", help="the plug-in's folder")
    functions.add_argument("--no-lint", dest="lint", action="store_false", help="check: skip cfn-lint")
    functions.set_defaults(run=cmd_functions)

    submit = subparsers.add_parser(
        "submit",
        parents=[common],
        help="submit a job: FUNCTION --param key=value ... (or --digits N for pi)",
        description="Submit a job of a business function (pijobs functions lists them and their parameters).",
    )
    submit.add_argument("function", nargs="?", metavar="FUNCTION", help="the function, e.g. pi")
    submit.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (repeatable); the value is typed by the function's schema, a list as a,b,c",
    )
    submit.add_argument("--params-json", metavar="JSON", help="the parameters as one JSON object")
    submit.add_argument("--digits", type=int, help="pi's shorthand: pijobs submit --digits N")
    submit.add_argument("--query", help="the query (the same as --param query=...; sql)")
    submit.add_argument(
        "--format", dest="result_format", help="the result's format (--param format=...; sql)"
    )
    submit.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=FILE_OR_UPLOAD_ID",
        help="an input (repeatable): an upload id (or a unique prefix), or a file, which is uploaded first",
    )
    submit.add_argument("--cost-center", help="cost center to charge")
    submit.add_argument("--name", help="a name for the job")
    submit.add_argument("--idempotency-key", help="a repeat with the same key returns the same job")
    submit.add_argument("--wait", action="store_true", help="show progress until the job finishes")
    submit.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    submit.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    submit.set_defaults(run=cmd_submit)

    id_help = "the job's id, or a unique prefix of it (as pijobs list shows it)"
    status = subparsers.add_parser("status", parents=[common], help="show one job")
    status.add_argument("job_id", metavar="ID", help=id_help)
    status.set_defaults(run=cmd_status)

    listing = subparsers.add_parser("list", parents=[common], help="your jobs, newest first")
    listing.add_argument("--limit", type=int, default=None, help="jobs per page")
    listing.add_argument("--next", dest="next_token", default=None, help="page token from a previous list")
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.add_argument("--function", default=None, metavar="NAME", help="only this function's jobs")
    listing.add_argument("--status", default=None, metavar="STATE", help="only jobs in this state")
    listing.add_argument(
        "--name-contains", default=None, metavar="TEXT", help="only jobs whose name contains TEXT"
    )
    listing.set_defaults(run=cmd_list)

    result = subparsers.add_parser("result", parents=[common], help="download a job's result, verified")
    result.add_argument("job_id", metavar="ID", help=id_help)
    result.add_argument(
        "-o", "--output", type=Path, default=None, help="file, or - for stdout (default: the result's name)"
    )
    result.set_defaults(run=cmd_result)

    cancel = subparsers.add_parser("cancel", parents=[common], help="cancel a job that has not finished")
    cancel.add_argument("job_id", metavar="ID", help=id_help)
    cancel.set_defaults(run=cmd_cancel)

    upload = subparsers.add_parser(
        "upload",
        parents=[common],
        help="upload a file for jobs to read; prints its upload id once pijobs has checked it",
    )
    upload.add_argument("file", type=Path, metavar="FILE")
    upload.add_argument("--filename", default=None, help="the name to record (default: the file's)")
    upload.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for the check")
    upload.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the check")
    upload.set_defaults(run=cmd_upload)

    uploads = subparsers.add_parser("uploads", parents=[common], help="your uploads, newest first")
    uploads.add_argument("--limit", type=int, default=None, help="uploads per page")
    uploads.add_argument("--next", dest="next_token", default=None, help="page token from a previous list")
    uploads.add_argument("--all", action="store_true", help="follow every page")
    uploads.set_defaults(run=cmd_uploads)


def connect(args: argparse.Namespace) -> PijobsClient:
    return customer.connect(args.api_url, args.api_key)


# ---- commands ----------------------------------------------------------------------------------------------
def cmd_functions(args: argparse.Namespace, out: Output) -> int:
    if args.action == "check":
        return check_plugin(args, out)
    if args.path is not None:
        raise UsageError("a PATH goes with check: pijobs functions check PATH")
    functions = connect(args).functions()
    out.either(
        {"functions": functions},
        lambda: out.table(functions, function_columns, empty="no functions are offered"),
    )
    return EXIT_OK


def check_plugin(args: argparse.Namespace, out: Output) -> int:
    """``pijobs functions check PATH``: each function of the plug-in, ready or what is wrong with it."""
    if args.path is None:
        raise UsageError("check takes the plug-in's folder: pijobs functions check PATH")
    checked = check(args.path, lint=args.lint)
    if out.json_mode:
        out.json({"functions": [vars(c) for c in checked]})
    for function in checked:
        if out.json_mode:
            continue
        verdict = "ready to package" if not function.problems else f"{len(function.problems)} problem(s)"
        out.line(f"{function.name} {function.version}: {verdict}")
        for problem in function.problems:
            out.line(f"  {problem}")
        if function.lint.startswith("skipped"):
            out.note(f"  cfn-lint {function.lint}")
    return EXIT_FAILED if any(c.problems for c in checked) else EXIT_OK


def cmd_submit(args: argparse.Namespace, out: Output) -> int:
    client = connect(args)
    function, params = submission(args, client)
    if args.inputs:
        inputs = dict(params.get("inputs") or {})
        for name, upload_id, sent in customer.resolve_inputs(client, args.inputs, upload=_upload_shown):
            inputs[name] = upload_id
            if sent is not None:
                out.note(f"uploaded {sent.get('filename')} as {upload_id} ({sent.get('status')})")
        params["inputs"] = inputs
    accepted = client.submit(
        function, params, cost_center=args.cost_center, name=args.name, idempotency_key=args.idempotency_key
    )
    job_id = str(accepted["job_id"])
    if not args.wait:
        if out.json_mode:
            out.json(accepted)
        else:
            out.line(f"job {job_id} {accepted.get('status', '')}")
            out.note(f"follow it with: pijobs status {job_id}")
        return EXIT_OK
    job = wait_with_progress(client, job_id, interval=args.interval, timeout=args.timeout)
    out.either(job, lambda: out.job(job))
    return EXIT_OK if job.get("status") == "SUCCEEDED" else EXIT_FAILED


def submission(args: argparse.Namespace, client: PijobsClient) -> tuple[str, dict[str, Any]]:
    """The function and parameters the command line asks for."""
    if args.digits is not None:
        if args.function not in (None, "pi") or args.params or args.params_json or args.inputs:
            raise UsageError("--digits is pi's shorthand: use FUNCTION --param key=value for other functions")
        return "pi", {"digits": args.digits}
    if not args.function:
        raise UsageError(
            "name a function (pijobs functions lists them), e.g. pijobs submit pi --param digits=1000"
        )
    params: dict[str, Any] = customer.params_json(args.params_json) if args.params_json else {}
    if args.query is not None:
        params["query"] = args.query
    if args.result_format is not None:
        params["format"] = args.result_format
    params.update(customer.typed_params(client, args.function, args.params))
    return args.function, params


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    client = connect(args)
    job = client.get(customer.resolve_job_id(client, args.job_id))
    out.either(job, lambda: out.job(job))
    return EXIT_OK


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    client = connect(args)
    filters = {"function": args.function, "status": args.status, "name_contains": args.name_contains}
    page = _one_page_or_all(
        args, "jobs", partial(client.iter_jobs, **filters), partial(client.list_jobs, **filters)
    )
    return _show_page(out, page, "jobs", job_columns, command="list")


def cmd_result(args: argparse.Namespace, out: Output) -> int:
    client = connect(args)
    job = client.get(customer.resolve_job_id(client, args.job_id))
    if job.get("status") != "SUCCEEDED" or not job.get("result"):
        raise OperationError(f"job {args.job_id} is {job.get('status')}: it has no result")
    if not job["result"].get("url"):
        raise OperationError(f"the result of job {args.job_id} expired at {job['result'].get('expires_at')}")
    if str(args.output) == "-":
        try:
            client.stream_result(job, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except IntegrityError as exc:
            raise OperationError(f"{exc}: what was written to stdout is not the result") from exc
        return EXIT_OK
    destination = args.output or customer.default_result_path(job)
    try:
        download = client.download_result(job, destination)
    except IntegrityError as exc:
        raise OperationError(f"{exc}; nothing written to {destination}") from exc
    except OSError as exc:  # the destination cannot be written, or the download broke off
        raise OperationError(f"cannot write {destination}: {exc}") from exc
    out.either(
        job,
        lambda: out.line(
            f"wrote {download.path} ({download.bytes} bytes, sha256 {download.sha256}): verified"
        ),
    )
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, out: Output) -> int:
    client = connect(args)
    job = client.cancel(customer.resolve_job_id(client, args.job_id))
    out.either(job, lambda: out.line(f"job {job.get('job_id', args.job_id)} {job.get('status', '')}"))
    return EXIT_OK


def cmd_upload(args: argparse.Namespace, out: Output) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file} is not a file")
    client = connect(args)
    upload = upload_with_progress(
        client, args.file, filename=args.filename, wait=args.wait, timeout=args.timeout
    )
    if out.json_mode:
        out.json(upload)
        return EXIT_OK
    out.note(
        f"upload {upload['upload_id']} {upload['status']}: {upload['bytes']} bytes, sha256 {upload['sha256']}"
    )
    out.line(str(upload["upload_id"]))
    return EXIT_OK


def cmd_uploads(args: argparse.Namespace, out: Output) -> int:
    client = connect(args)
    page = _one_page_or_all(args, "uploads", client.iter_uploads, client.list_uploads)
    return _show_page(out, page, "uploads", upload_columns, command="uploads")


def _one_page_or_all(
    args: argparse.Namespace, key: str, every: Callable[..., Any], one_page: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    """``--all``: every item (as one page, ``next`` None); else the page ``--next`` names."""
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.all:
        return {key: list(every(limit=args.limit)), "next": None}
    return one_page(limit=args.limit, next_token=args.next_token)


def _show_page(out: Output, page: dict[str, Any], key: str, columns: Any, *, command: str) -> int:
    if out.json_mode:
        out.json(page)
        return EXIT_OK
    out.table(page.get(key, []), columns, empty=f"no {key}")
    if page.get("next"):
        out.note(f"more: pijobs {command} --all, or --next {page['next']}")
    return EXIT_OK


# ---- progress on stderr ------------------------------------------------------------------------------------
def _upload_shown(client: PijobsClient, path: Path) -> dict[str, Any]:
    return upload_with_progress(client, path, filename=None, wait=True, timeout=600.0)


def upload_with_progress(
    client: PijobsClient, path: Path, *, filename: str | None, wait: bool, timeout: float
) -> dict[str, Any]:
    """``client.upload_file`` with a rich progress bar on a terminal's stderr (reading, then sending)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        return client.upload_file(path, filename=filename, wait=wait, timeout=timeout)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"sha256 {path.name}", total=path.stat().st_size)
        phases = {"hash": f"sha256 {path.name}", "send": f"sending {path.name}"}

        def update(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phases.get(phase, phase), completed=done, total=total)

        upload = client.upload_file(path, filename=filename, wait=False, on_progress=update)
        if wait:
            bar.update(task, description=f"checking {path.name}")
            upload = client.wait_upload(str(upload["upload_id"]), timeout=timeout)
    return upload


def wait_with_progress(
    client: PijobsClient, job_id: str, *, interval: float, timeout: float | None
) -> dict[str, Any]:
    """Poll until the job is terminal: a progress bar with the job's ETA on a terminal's stderr, a line
    per change otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

    console = Console(stderr=True, highlight=False)
    try:
        if not console.is_terminal:
            return client.wait(
                job_id, interval=interval, timeout=timeout, on_update=_status_lines(console, job_id)
            )
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
        with Progress(*columns, TextColumn("{task.fields[eta]}"), console=console) as bar:
            task = bar.add_task(f"{job_id[:12]} QUEUED", total=None, eta="")

            def update(job: dict[str, Any]) -> None:
                status, total, completed = progress_state(job)
                description = f"{job_id[:12]} {status}"
                bar.update(task, description=description, total=total, completed=completed, eta=eta_text(job))

            return client.wait(job_id, interval=interval, timeout=timeout, on_update=update)
    except KeyboardInterrupt:
        console.print(f"stopped waiting; the job goes on: pijobs status {job_id}", markup=False)
        raise


def _status_lines(console: Any, job_id: str) -> Callable[[dict[str, Any]], None]:
    """A line when the status changes, and every tenth of progress, with the ETA when there is one."""
    seen: list[tuple[str, int]] = []

    def update(job: dict[str, Any]) -> None:
        status, _, completed = progress_state(job)
        step = int(completed * 10) if job.get("progress") is not None else -1
        if not seen or seen[-1] != (status, step):
            seen.append((status, step))
            progress = f" {completed:.0%}" if step >= 0 and status == "RUNNING" else ""
            eta = eta_text(job)
            console.print(f"job {job_id} {status}{progress}{' ' + eta if eta else ''}", markup=False)

    return update
