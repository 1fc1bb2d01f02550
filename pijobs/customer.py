"""The customer's commands: submit, status, list, result, cancel, upload, uploads — the REST API from a
terminal.

Each takes ``--api-url`` / ``--api-key`` (default ``$PIJOBS_API_URL`` / ``$PIJOBS_API_KEY``) and ``--json``
(stdout carries the API's JSON and nothing else; progress and messages go to stderr). Exit codes: 0 done,
1 the API refused or the job did not succeed, 2 a usage problem (missing URL or key).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pijobs.client import (
    ApiError,
    IntegrityError,
    PijobsClient,
    PijobsClientError,
    UploadRefusedError,
    WaitTimeoutError,
)
from pijobs.shared.ids import ID_PATTERN

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

URL_ENV = "PIJOBS_API_URL"
KEY_ENV = "PIJOBS_API_KEY"

Command = Callable[[argparse.Namespace, PijobsClient, "Output"], int]


class UsageError(Exception):
    """A problem with how the command was called (exit 2)."""


# ---- registration ------------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    common = _common_options()

    functions = subparsers.add_parser(
        "functions", parents=[common], help="the business functions offered, with their parameters"
    )
    functions.set_defaults(run=_runner(cmd_functions))

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
        help="a parameter (repeatable); the value is typed by the function's schema",
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
        help="an input (repeatable): an upload id, or a file, which is uploaded first",
    )
    submit.add_argument("--cost-center", help="cost center to charge")
    submit.add_argument("--name", help="a name for the job")
    submit.add_argument("--idempotency-key", help="a repeat with the same key returns the same job")
    submit.add_argument("--wait", action="store_true", help="show progress until the job finishes")
    submit.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    submit.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    submit.set_defaults(run=_runner(cmd_submit))

    status = subparsers.add_parser("status", parents=[common], help="show one job")
    status.add_argument("job_id", metavar="ID")
    status.set_defaults(run=_runner(cmd_status))

    listing = subparsers.add_parser("list", parents=[common], help="your jobs, newest first")
    listing.add_argument("--limit", type=int, default=None, help="jobs per page")
    listing.add_argument("--next", dest="next_token", default=None, help="page token from a previous list")
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.add_argument("--function", default=None, metavar="NAME", help="only this function's jobs")
    listing.add_argument("--status", default=None, metavar="STATE", help="only jobs in this state")
    listing.add_argument(
        "--name-contains", default=None, metavar="TEXT", help="only jobs whose name contains TEXT"
    )
    listing.set_defaults(run=_runner(cmd_list))

    result = subparsers.add_parser("result", parents=[common], help="download a job's result, verified")
    result.add_argument("job_id", metavar="ID")
    result.add_argument(
        "-o", "--output", type=Path, default=None, help="file, or - for stdout (default: the result's name)"
    )
    result.set_defaults(run=_runner(cmd_result))

    cancel = subparsers.add_parser("cancel", parents=[common], help="cancel a job that has not finished")
    cancel.add_argument("job_id", metavar="ID")
    cancel.set_defaults(run=_runner(cmd_cancel))

    upload = subparsers.add_parser(
        "upload",
        parents=[common],
        help="upload a file for jobs to read; prints its upload id once pijobs has checked it",
    )
    upload.add_argument("file", type=Path, metavar="FILE")
    upload.add_argument("--filename", default=None, help="the name to record (default: the file's)")
    upload.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for the check")
    upload.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the check")
    upload.set_defaults(run=_runner(cmd_upload))

    uploads = subparsers.add_parser("uploads", parents=[common], help="your uploads, newest first")
    uploads.add_argument("--limit", type=int, default=None, help="uploads per page")
    uploads.add_argument("--next", dest="next_token", default=None, help="page token from a previous list")
    uploads.add_argument("--all", action="store_true", help="follow every page")
    uploads.set_defaults(run=_runner(cmd_uploads))


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("API")
    group.add_argument("--api-url", default=None, help=f"base URL of the API (default: ${URL_ENV})")
    group.add_argument(
        "--api-key", default=None, help=f"API key (default: ${KEY_ENV}; the variable keeps it out of ps)"
    )
    group.add_argument("--json", dest="json_output", action="store_true", help="print the API's JSON only")
    return common


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: build the client, turn client errors into a message and an exit code."""

    def run(args: argparse.Namespace) -> int:
        out = Output(json_mode=args.json_output)
        try:
            client = client_from(args.api_url, args.api_key, os.environ)
            return command(args, client, out)
        except UsageError as exc:
            out.error(str(exc))
            return EXIT_USAGE
        except ApiError as exc:
            out.api_error(exc)
            return EXIT_FAILED
        except WaitTimeoutError as exc:
            out.error(f"{exc}; it goes on: pijobs status {exc.job.get('job_id')}")
            return EXIT_FAILED
        except UploadRefusedError as exc:
            if out.json_mode and exc.upload:
                out.json(exc.upload)
            out.error(f"{exc}; nothing can use it: fix the file and upload it again")
            return EXIT_FAILED
        except PijobsClientError as exc:
            out.error(str(exc))
            return EXIT_FAILED

    return run


def client_from(api_url: str | None, api_key: str | None, env: Any) -> PijobsClient:
    url = api_url or env.get(URL_ENV)
    key = api_key or env.get(KEY_ENV)
    if not url:
        raise UsageError(f"no API URL: pass --api-url or set {URL_ENV}")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"the API URL must start with http:// or https://, not {url!r}")
    if not key:
        raise UsageError(f"no API key: pass --api-key or set {KEY_ENV}")
    return PijobsClient(url, key)


# ---- commands ----------------------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    function, params = submission(args, client)
    if args.inputs:
        params["inputs"] = {**params.get("inputs", {}), **resolve_inputs(client, args.inputs, out)}
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
    if out.json_mode:
        out.json(job)
    else:
        out.job(job)
    return EXIT_OK if job.get("status") == "SUCCEEDED" else EXIT_FAILED


PREFIX_PATTERN = re.compile(r"[0-9a-f]{4,31}")
PREFIX_SCAN_LIMIT = 1000  # jobs looked through to expand a prefix


def resolve_job_id(client: PijobsClient, text: str) -> str:
    """A full job id, or the one job whose id starts with ``text`` (4+ hex digits, as git takes commits)."""
    if not PREFIX_PATTERN.fullmatch(text):
        return text  # a full id, or not an id at all: the API answers for it
    matches = []
    for number, job in enumerate(client.iter_jobs(limit=100)):
        if number >= PREFIX_SCAN_LIMIT:
            break
        if str(job.get("job_id", "")).startswith(text):
            matches.append(str(job["job_id"]))
    if len(matches) > 1:
        raise UsageError(
            f"{text} is the start of {len(matches)} jobs: {', '.join(matches[:5])}; give more of it"
        )
    if not matches:
        raise PijobsClientError(f"no job of yours starts with {text} (among the newest {PREFIX_SCAN_LIMIT})")
    return matches[0]


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
    params: dict[str, Any] = {}
    if args.params_json:
        try:
            params = json.loads(args.params_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--params-json is not JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(params, dict):
            raise UsageError("--params-json must be a JSON object")
    if args.query is not None:
        params["query"] = args.query
    if args.result_format is not None:
        params["format"] = args.result_format
    if args.params:
        schema = client.function(args.function).get("parameters", {})
        for pair in args.params:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"--param takes KEY=VALUE, not {pair!r}")
            params[key] = typed_value(schema.get("properties", {}).get(key, {}), value)
    return args.function, params


def typed_value(schema: dict[str, Any], text: str) -> Any:
    """A command-line value as the parameter's JSON type: digits=100 is a number where the schema says so."""
    kind = schema.get("type")
    if kind in ("integer", "number", "boolean", "array", "object", "null"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text  # sent as it is: the API names the parameter and what it expects
    return text


UPLOAD_ID = re.compile(ID_PATTERN)


def resolve_inputs(client: PijobsClient, pairs: list[str], out: Output) -> dict[str, str]:
    """``NAME=FILE_OR_UPLOAD_ID`` pairs as ``{name: upload_id}``: a file is uploaded (and checked) first."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--input takes NAME=FILE_OR_UPLOAD_ID, not {pair!r}")
        path = Path(value).expanduser()
        if path.is_file():
            upload = upload_with_progress(client, path, filename=None, wait=True, timeout=600.0)
            out.note(f"uploaded {path} as {upload['upload_id']} ({upload['status']})")
            inputs[name] = str(upload["upload_id"])
        elif UPLOAD_ID.fullmatch(value):
            inputs[name] = value
        else:
            raise UsageError(f"--input {name}: {value} is neither a file nor an upload id")
    return inputs


def cmd_upload(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file} is not a file")
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


def cmd_uploads(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.all:
        page: dict[str, Any] = {"uploads": list(client.iter_uploads(limit=args.limit)), "next": None}
    else:
        page = client.list_uploads(limit=args.limit, next_token=args.next_token)
    if out.json_mode:
        out.json(page)
        return EXIT_OK
    out.table(page.get("uploads", []), UPLOAD_COLUMNS, empty="no uploads")
    if page.get("next"):
        out.note(f"more: pijobs uploads --all, or --next {page['next']}")
    return EXIT_OK


def cmd_functions(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    functions = client.functions()
    if out.json_mode:
        out.json({"functions": functions})
    else:
        out.functions_table(functions)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    job = client.get(resolve_job_id(client, args.job_id))
    if out.json_mode:
        out.json(job)
    else:
        out.job(job)
    return EXIT_OK


def cmd_list(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    filters = {"function": args.function, "status": args.status, "name_contains": args.name_contains}
    if args.all:
        jobs = list(client.iter_jobs(limit=args.limit, **filters))
        page: dict[str, Any] = {"jobs": jobs, "next": None}
    else:
        page = client.list_jobs(limit=args.limit, next_token=args.next_token, **filters)
    if out.json_mode:
        out.json(page)
        return EXIT_OK
    out.jobs_table(page.get("jobs", []))
    if page.get("next"):
        out.note(f"more: pijobs list --all, or --next {page['next']}")
    return EXIT_OK


def cmd_result(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    job = client.get(resolve_job_id(client, args.job_id))
    if job.get("status") != "SUCCEEDED" or not job.get("result"):
        out.error(f"job {args.job_id} is {job.get('status')}: it has no result")
        return EXIT_FAILED
    if not job["result"].get("url"):
        out.error(f"the result of job {args.job_id} expired at {job['result'].get('expires_at')}")
        return EXIT_FAILED
    if str(args.output) == "-":
        try:
            client.stream_result(job, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except IntegrityError as exc:
            out.error(f"{exc}: what was written to stdout is not the result")
            return EXIT_FAILED
        return EXIT_OK
    destination = args.output or default_result_path(job)
    try:
        download = client.download_result(job, destination)
    except IntegrityError as exc:
        out.error(f"{exc}; nothing written to {destination}")
        return EXIT_FAILED
    except OSError as exc:  # the destination cannot be written, or the download broke off
        out.error(f"cannot write {destination}: {exc}")
        return EXIT_FAILED
    if out.json_mode:
        out.json(job)
    else:
        out.line(f"wrote {download.path} ({download.bytes} bytes, sha256 {download.sha256}): verified")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: PijobsClient, out: Output) -> int:
    job = client.cancel(resolve_job_id(client, args.job_id))
    if out.json_mode:
        out.json(job)
    else:
        out.line(f"job {job.get('job_id', args.job_id)} {job.get('status', '')}")
    return EXIT_OK


# ---- helpers -----------------------------------------------------------------------------------------------
def default_result_path(job: dict[str, Any]) -> Path:
    """The last part of the result's key (``pi-15000.txt``), in the current directory."""
    name = PurePosixPath(str((job.get("result") or {}).get("filename") or "")).name
    return Path(name or f"{job.get('job_id', 'result')}.txt")


def progress_state(job: dict[str, Any]) -> tuple[str, float | None, float]:
    """(description, total, completed) of a progress bar for ``job``; total None while progress is unknown."""
    status = str(job.get("status", "?"))
    progress = job.get("progress")
    if progress is None:
        return status, None, 0.0
    return status, 1.0, max(0.0, min(1.0, float(progress)))


def wait_with_progress(
    client: PijobsClient, job_id: str, *, interval: float, timeout: float | None
) -> dict[str, Any]:
    """Poll until the job is terminal: a rich progress bar on a terminal's stderr, status lines otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True, highlight=False)
    try:
        if not console.is_terminal:
            return client.wait(
                job_id, interval=interval, timeout=timeout, on_update=_status_lines(console, job_id)
            )
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task(f"{job_id[:8]} QUEUED", total=None)

            def update(job: dict[str, Any]) -> None:
                status, total, completed = progress_state(job)
                bar.update(task, description=f"{job_id[:8]} {status}", total=total, completed=completed)

            return client.wait(job_id, interval=interval, timeout=timeout, on_update=update)
    except KeyboardInterrupt:
        console.print(f"stopped waiting; the job goes on: pijobs status {job_id}", markup=False)
        raise


def _status_lines(console: Any, job_id: str) -> Callable[[dict[str, Any]], None]:
    seen: list[str] = []

    def update(job: dict[str, Any]) -> None:
        status = str(job.get("status"))
        if not seen or seen[-1] != status:
            seen.append(status)
            console.print(f"job {job_id} {status}", markup=False)

    return update


def error_lines(exc: ApiError) -> list[str]:
    """``422 validation_error: message`` and one ``  field: problem`` line per detail."""
    lines = [f"{exc.status} {exc.code}: {exc.message}"]
    for detail in exc.details:
        if isinstance(detail, dict):
            lines.append(f"  {detail.get('field', '?')}: {detail.get('problem', '')}")
    return lines


JOB_FIELDS = (
    "job_id",
    "status",
    "function",
    "version",
    "params",
    "name",
    "cost_center",
    "attempts",
    "progress",
    "created_at",
    "dispatched_at",
    "started_at",
    "finished_at",
)


def job_rows(job: dict[str, Any]) -> list[tuple[str, str]]:
    """The job as (field, text) rows for a human; the result's URL is printed apart, unbroken."""
    rows = [(name, _text(job.get(name))) for name in JOB_FIELDS if job.get(name) is not None]
    rows = [(n, f"{float(job['progress']):.0%}" if n == "progress" else v) for n, v in rows]
    error = job.get("error")
    if error:
        rows.append(("error", f"{error.get('code')}: {error.get('message')}"))
    result = job.get("result")
    if result:
        rows += [("result", str(result.get("filename"))), ("bytes", _text(result.get("bytes")))]
        rows.append(("sha256", str(result.get("sha256"))))
    return rows


LIST_COLUMNS = ("job_id", "status", "function", "params", "name", "created_at", "finished_at")
UPLOAD_COLUMNS = ("upload_id", "status", "filename", "bytes", "created_at", "expires_at", "reason")
PIPE_WIDTH = 200  # rich assumes 80 columns off a terminal; piped tables stay one line per row


def stdout_console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=PIPE_WIDTH)


def _text(value: Any) -> str:
    if isinstance(value, dict):  # a job's params: digits=15000
        return " ".join(f"{key}={_text(item)}" for key, item in value.items())
    return "" if value is None else str(value)


@dataclass
class Output:
    """Where things go: JSON and results to stdout, messages to stderr; rich only for humans."""

    json_mode: bool = False

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        print(text, flush=True)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print(f"pijobs: {text}", file=sys.stderr, flush=True)

    def api_error(self, exc: ApiError) -> None:
        if self.json_mode and exc.body:
            self.json(exc.body)
        self.error("\n".join(error_lines(exc)))

    def job(self, job: dict[str, Any]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name, value in job_rows(job):
            table.add_row(name, Text(value))
        stdout_console().print(table)
        url = (job.get("result") or {}).get("url")
        if url:
            self.line(f"url {url}")

    def functions_table(self, functions: list[dict[str, Any]]) -> None:
        from rich.table import Table
        from rich.text import Text

        if not functions:
            self.note("no functions are offered")
            return
        table = Table(box=None)
        for column in ("name", "version", "title", "parameters", "limits"):
            table.add_column(column, overflow="fold")
        for function in functions:
            schema = function.get("parameters", {})
            required = set(schema.get("required", []))
            parameters = " ".join(
                f"{key}{'' if key in required else '?'}:{spec.get('type', 'any')}"
                for key, spec in schema.get("properties", {}).items()
            )
            cells = (function.get("name"), function.get("version"), function.get("title"), parameters)
            table.add_row(*(Text(_text(c)) for c in (*cells, function.get("limits") or {})))
        stdout_console().print(table)

    def jobs_table(self, jobs: list[dict[str, Any]]) -> None:
        self.table(jobs, LIST_COLUMNS, empty="no jobs", wrapped=("name",))

    def table(
        self,
        rows: list[dict[str, Any]],
        columns: tuple[str, ...],
        *,
        empty: str,
        wrapped: tuple[str, ...] = ("reason",),
    ) -> None:
        from rich.table import Table
        from rich.text import Text

        if not rows:
            self.note(empty)
            return
        table = Table(box=None)
        for column in columns:
            table.add_column(column, no_wrap=column not in wrapped, overflow="ellipsis")
        for row in rows:
            table.add_row(*(Text(_text(row.get(column))) for column in columns))
        stdout_console().print(table)
