"""What pijobs' library functions raise when they refuse or fail, for a Python caller and the command alike.

Two kinds, one base: a :class:`UsageError` is the caller's request (a bad value, nothing to change, a missing
URL): asking differently fixes it. An :class:`OperationError` is the deployment, the API or the work saying
no. The command line turns them into exit codes 2 and 1 (``pijobs.cli``); a library caller catches
:class:`PijobsError`. Each message is one line that says what to do.
"""

from __future__ import annotations


class PijobsError(Exception):
    """Base of the errors of pijobs' client-side library (the client, ops, deploy, keys)."""


class UsageError(PijobsError):
    """The request is wrong as asked (the command line's exit 2)."""


class OperationError(PijobsError):
    """The deployment, the API or the work refused or failed (the command line's exit 1)."""
