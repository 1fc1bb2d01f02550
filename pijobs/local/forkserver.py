"""``python -m pijobs.local.forkserver MODULE [--clients a,b] [--warm pkg.mod:function]``: an interpreter that
imports the worker once, makes its AWS clients, and then forks a ready copy for each instance. A worker so
starts in milliseconds, not in the second and a half its imports and clients take from a cold interpreter
(an instance's image has its interpreter warm in the same sense: the boot is paid before the job).

Each copy runs ``MODULE.main(argv)`` in its own session with the environment it was given, as
``python -m`` would run the package whose ``__main__`` is MODULE, and dies with the server.

One JSON object a line. In: ``{"argv": [...], "env": {...}, "log": path or null}``. Out: ``{"pid": n}`` or
``{"error": "..."}`` for each request, in order, and ``{"exited": n, "code": c}`` when a copy ends.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import traceback
from types import ModuleType
from typing import IO, Any


def die_with_parent() -> None:
    """SIGTERM this process when its parent goes away, even by SIGKILL (Linux prctl), as an instance goes
    with its machine."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


class _Replies:
    """Lines to the runner, from the main thread and the waiting threads; raw writes, no buffered stream
    whose lock a fork could copy while it is held."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self._lock:
            os.write(self.fd, data)


def _warm(clients: list[str], functions: list[str]) -> None:
    if clients:
        # lazy: boto3 only when the runner asks for warm AWS clients (the workers themselves use none)
        from pijobs.shared import aws

        for service in clients:
            aws.client(service)
    for spec in functions:
        module_name, _, name = spec.partition(":")
        getattr(importlib.import_module(module_name), name)()


def _run_child(module: ModuleType, request: dict[str, Any], requests: IO[bytes], replies: _Replies) -> None:
    code: Any = 1
    try:
        os.setsid()  # its own process group: the runner signals the group, a pool it spawns included
        if sys.platform == "linux":
            die_with_parent()
        requests.close()
        os.close(replies.fd)
        os.environ.clear()
        os.environ.update(request["env"])
        log = request.get("log")
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        argv = [str(arg) for arg in request["argv"]]
        sys.argv = [str(module.__file__), *argv]
        code = module.main(argv)
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _await_child(pid: int, replies: _Replies) -> None:
    _, status = os.waitpid(pid, 0)
    replies.send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(module: ModuleType, requests: IO[bytes], replies: _Replies) -> None:
    for line in requests:
        try:
            request = json.loads(line)
            pid = os.fork()
        except Exception as exc:
            replies.send({"error": repr(exc)})
            continue
        if pid == 0:
            _run_child(module, request, requests, replies)
        threading.Thread(target=_await_child, args=(pid, replies), daemon=True).start()
        replies.send({"pid": pid})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pijobs.local.forkserver", description=__doc__)
    parser.add_argument(
        "module", help="the module whose main(argv) each copy runs, e.g. pijobs.worker.__main__"
    )
    parser.add_argument("--clients", default="", help="comma-separated AWS clients to make beforehand")
    parser.add_argument("--warm", action="append", default=[], help="module:function to call beforehand")
    args = parser.parse_args(argv)
    # The protocol keeps its own descriptors; the copies inherit /dev/null as stdin and stdout.
    requests = os.fdopen(os.dup(0), "rb")
    replies = _Replies(os.dup(1))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    module = importlib.import_module(args.module)
    _warm([c for c in args.clients.split(",") if c], args.warm)
    serve(module, requests, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
