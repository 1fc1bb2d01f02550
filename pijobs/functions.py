"""The plug-in API: everything a business function imports from pijobs, and the only import it needs.

A business function is a subclass of ``BusinessFunction`` registered under the entry point group
``pijobs.functions`` (docs/functions.md walks through one). What is named here stays: a function written
against this module keeps working across pijobs releases; what it reaches past this module may move.

- ``BusinessFunction``: the contract (request model, limits model, instance types, root volume, deadline,
  own stack parameters, run); the platform renders the job template from it.
- ``RunContext``: what ``run`` gets (parameters, scratch directory, progress, cancellation, inputs, limits).
- ``OutputFile``: what ``run`` returns (a file, the name the customer downloads it under, metadata).
- ``JobRefusedError``: the job cannot be done as asked; its message is shown to the customer.
- ``Inputs``: the type of a request model's ``inputs`` field (``{name: upload_id}``), with ``MAX_INPUTS``.
- ``NoLimits``: the limits model of a function the operator cannot tune.
- ``SUPPORTED_INSTANCE_TYPES``, ``SUPPORTED_RESOURCE_TYPES``, ``DEADLINE_RANGE``, ``ROOT_VOLUME_RANGE``,
  ``METADATA_MAX_BYTES``: the bounds the platform holds a function to;
  ``PLATFORM_PARAMETERS``: the parameters the platform sets on every job stack (an own template declares
  them); ``RESERVED_PARAMETERS``: the names a function's own stack parameters may not take.
"""

from __future__ import annotations

from pijobs.shared.functions import (
    DEADLINE_RANGE,
    ENTRY_POINT_GROUP,
    METADATA_MAX_BYTES,
    PLATFORM_PARAMETERS,
    RESERVED_PARAMETERS,
    ROOT_VOLUME_RANGE,
    SUPPORTED_INSTANCE_TYPES,
    SUPPORTED_RESOURCE_TYPES,
    BusinessFunction,
    JobRefusedError,
    NoLimits,
    OutputFile,
    RunContext,
)
from pijobs.shared.inputs import MAX_INPUTS, InputName, Inputs

__all__ = [
    "DEADLINE_RANGE",
    "ENTRY_POINT_GROUP",
    "MAX_INPUTS",
    "METADATA_MAX_BYTES",
    "PLATFORM_PARAMETERS",
    "RESERVED_PARAMETERS",
    "ROOT_VOLUME_RANGE",
    "SUPPORTED_INSTANCE_TYPES",
    "SUPPORTED_RESOURCE_TYPES",
    "BusinessFunction",
    "InputName",
    "Inputs",
    "JobRefusedError",
    "NoLimits",
    "OutputFile",
    "RunContext",
]
