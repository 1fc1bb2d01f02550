"""The embedded default: moto's server and the stand-ins for what moto cannot execute.

Exports are loaded lazily, so importing one module here does not pull in moto's server and werkzeug.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "InstanceRunner": "pijobs.local.runner",
    "LambdaContext": "pijobs.local.lambda_context",
    "LocalEventSourceMapping": "pijobs.local.esm",
    "LocalGateway": "pijobs.local.gateway",
    "LocalMotoServer": "pijobs.local.moto_server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
