"""Business functions: the plug-in contract, and the registry of the installed and enabled ones.

A business function is everything that differs between two kinds of job: its request model, the operator's
policy (instance types, root volume, deadline, limits), its own whitelisted stack parameters and what its
worker runs. The platform renders the job template from that (pijobs/job_template.py).
The API, the dispatcher, the worker runtime and the local stack read functions only through this module.
Functions register as Python entry points in the group ``pijobs.functions``; ``docs/functions.md`` is the
guide to writing one.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from pijobs.shared import errors
from pijobs.shared.job_errors import JobErrorCode

ENTRY_POINT_GROUP = "pijobs.functions"
NAME_PATTERN = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
VERSION_PATTERN = re.compile(r"[0-9A-Za-z](?:[0-9A-Za-z._-]{0,30}[0-9A-Za-z])?")
FILENAME_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,118}[A-Za-z0-9])?")

# Where `pijobs package` puts a function's artifacts in the artifacts bucket, per name and version: a job
# keeps the version it was submitted with, so a running job never switches to another template.
FUNCTIONS_PREFIX = "functions/"
TEMPLATE_FILE = "template.yaml"
WORKER_FILE = "worker.zip"
RESULTS_PREFIX = "results/"

# Parameters every function's template declares: the dispatcher sets them on every job stack. The instance
# gets no credentials: a presigned GET of its worker artifact, the API's URL and its attempt's worker channel
# token (both secrets NoEcho; docs/security.md).
PLATFORM_PARAMETERS: tuple[str, ...] = (
    "JobId",
    "InstanceType",
    "DeadlineSeconds",
    "WorkerArtifactUrl",
    "WorkerToken",
    "ApiUrl",
    "SubnetId",
    "VpcId",
)
# Names a function's own stack parameters may not take: the platform's, the job template's image and the
# instance's Name tag (each own parameter is recorded as a tag of its name).
RESERVED_PARAMETERS = frozenset({*PLATFORM_PARAMETERS, "ImageId", "Name"})
# What the primary stack's CloudFormation service role can create (infra/primary.yaml, CfnServiceRole).
SUPPORTED_RESOURCE_TYPES = frozenset(
    {"AWS::EC2::Instance", "AWS::EC2::LaunchTemplate", "AWS::EC2::SecurityGroup"}
)
# The instance types that role may launch; each function allows a subset.
SUPPORTED_INSTANCE_TYPES: tuple[str, ...] = (
    "c7i.large",
    "c7i.xlarge",
    "c7i.2xlarge",
    "r7i.large",
    "r7i.xlarge",
)
DEADLINE_RANGE = (60, 86_400)  # the job template's DeadlineSeconds bounds
ROOT_VOLUME_RANGE = (8, 1024)  # GiB: a function's root_volume_gib
# What every job's deadline allows besides the work its parameters ask for: the instance's start, the
# worker's install, and its result's upload, generously (a function's deadline_seconds adds its own work).
BOOT_SECONDS = 300


def artifact_key(name: str, version: str, file: str) -> str:
    return f"{FUNCTIONS_PREFIX}{name}/{version}/{file}"


def result_key(owner: str, job_id: str, filename: str) -> str:
    return f"{RESULTS_PREFIX}{owner}/{job_id}/{filename}"


class NoLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobRefusedError(Exception):
    """Raised by ``run``: the job cannot be done as asked. ``message`` is shown to the customer as it is."""

    def __init__(self, message: str, *, code: str = JobErrorCode.REFUSED.value) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# A value of ``OutputFile.metadata``: JSON (scalars, lists, objects), at most METADATA_MAX_BYTES in all.
MetadataValue = Any
METADATA_MAX_BYTES = 16_384


@dataclass(frozen=True)
class OutputFile:
    """What ``run`` produced: a file in the scratch directory, the name the customer downloads it under, its
    content type and metadata (small JSON values) that the job view shows under ``result.metadata``."""

    path: Path
    filename: str
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What ``run`` gets: the validated parameters, a private scratch directory, progress and cancellation.

    ``progress(fraction)`` records progress (0..1) and raises when the job was cancelled, so a function that
    reports progress stops on its own; ``cancelled()`` asks without raising. ``inputs`` maps each input's
    name to its file in the scratch directory, downloaded and checked against its pinned size and sha256.
    """

    job_id: str
    params: Any  # the function's request model instance
    scratch: Path
    progress: Callable[[float], None]
    cancelled: Callable[[], bool]
    inputs: Mapping[str, Path] = field(default_factory=dict)
    instance_id: str | None = None
    memory_limit_bytes: int | None = None
    limits: Any = None  # the operator's limits for the function (its limits_model) as of dispatch


class BusinessFunction(ABC):
    """The contract of a business function. Subclass it, fill in the class attributes and the four methods,
    and register the class under the entry point group ``pijobs.functions``."""

    name: ClassVar[str]  # URL-safe: lowercase letters, digits and dashes
    version: ClassVar[str]  # part of the artifact keys; bump it whenever the template or the worker changes
    title: ClassVar[str]  # one line for the catalog
    description: ClassVar[str]
    request_model: ClassVar[type[BaseModel]]  # extra="forbid"; its JSON Schema is the public schema
    limits_model: ClassVar[type[BaseModel]] = NoLimits  # the operator's limits, with their defaults
    instance_types: ClassVar[tuple[str, ...]]  # the allow-list ``instance_type`` chooses from
    root_volume_gib: ClassVar[int] = 16  # the instance's encrypted gp3 root volume, within ROOT_VOLUME_RANGE
    # This function's own job stack parameters (String, recorded on the instance's tags): the dispatcher
    # passes these and the platform's, nothing else.
    stack_parameter_names: ClassVar[tuple[str, ...]] = ()
    # None: the platform renders the job template (pijobs/job_template.py). A file name beside the class's
    # module: the function ships its own, deployed only while it keeps the platform's invariants.
    template: ClassVar[str | None] = None
    resource_types: ClassVar[frozenset[str]] = SUPPORTED_RESOURCE_TYPES  # what its template creates
    requirements: ClassVar[tuple[str, ...]] = ()  # what the worker needs installed besides pijobs' own
    # True: the request model has an ``inputs`` field of type ``pijobs.shared.inputs.Inputs``
    # ({name: upload_id}), which the API pins at submit and the worker downloads before ``run``
    # (``RunContext.inputs``).
    accepts_inputs: ClassVar[bool] = False
    # The codes ``run`` refuses a job with (``JobRefusedError(code=...)``), besides the platform's
    # (pijobs.shared.job_errors): the OpenAPI document lists them as values of a job's ``error.code``.
    error_codes: ClassVar[frozenset[str]] = frozenset()

    def check(self, params: Any, limits: Any) -> list[tuple[str, str]]:
        """The operator's refusals before a job is queued: ``[(field, problem)]``, empty when acceptable."""
        return []

    @abstractmethod
    def instance_type(self, params: Any) -> str:
        """One of ``instance_types``, from the parameters."""

    @abstractmethod
    def deadline_seconds(self, params: Any) -> int:
        """The job's hard wall-clock limit on its instance, boot included."""

    def stack_parameters(self, params: Any) -> dict[str, str]:
        """This function's own template parameters for one job (names from ``stack_parameter_names``)."""
        return {}

    @abstractmethod
    def run(self, ctx: RunContext) -> OutputFile:
        """On the instance: compute, write the output into ``ctx.scratch``, return it. Import heavy
        dependencies here, not at module level: the API imports the module to validate requests."""

    # ---- derived, the same for every function ------------------------------------------------------------
    def template_path(self) -> Path | None:
        """The template the function ships of its own, or None (the platform renders it)."""
        if self.template is None:
            return None
        module = importlib.import_module(type(self).__module__)
        return Path(str(module.__file__)).resolve().parent / self.template

    def parameter_bounds(self, limits: Any) -> dict[str, dict[str, int | float]]:
        """The bounds the operator's limits put on parameters, as JSON-schema keywords (``minimum``,
        ``maximum``): ``{"digits": {"maximum": limits.max_digits}}``. The catalog, the OpenAPI document and
        the console's form show them in the parameter's schema, and a request beyond them is refused saying
        them: the deployment's bound is stated once, here, not as a wider one in the request model."""
        return {}

    def parameter_schema(self, limits: Any = None) -> dict[str, Any]:
        """The request model's JSON schema; with ``limits``, narrowed to the deployment's bounds."""
        schema = self.request_model.model_json_schema()
        if limits is not None:
            for name, keywords in self.parameter_bounds(limits).items():
                schema["properties"][name].update(keywords)
        return schema

    def bound_problems(self, params: Any, limits: Any) -> list[tuple[str, str]]:
        """``(parameter, problem)`` for each value outside its ``parameter_bounds``."""
        problems = []
        for name in self.parameter_bounds(limits):
            value = getattr(params, name, None)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            schema = self.parameter_schema(limits)["properties"][name]
            low, high = schema.get("minimum"), schema.get("maximum")
            if (low is not None and value < low) or (high is not None and value > high):
                problems.append((name, range_problem(low, high)))
        return problems

    def parse_params(self, params: Mapping[str, Any]) -> Any:
        return self.request_model.model_validate(params)

    def requested_inputs(self, params: Any) -> dict[str, str]:
        """``{name: upload_id}`` of one job's inputs (empty for a function that takes none)."""
        return dict(getattr(params, "inputs", None) or {}) if self.accepts_inputs else {}


def catalog_entry(function: BusinessFunction, limits: BaseModel) -> dict[str, Any]:
    """A function as the catalog shows it (``GET /functions``)."""
    return {
        "name": function.name,
        "version": function.version,
        "title": function.title,
        "description": function.description,
        "parameters": function.parameter_schema(limits),
        "limits": limits.model_dump(mode="json"),
    }


def range_problem(low: float | None, high: float | None) -> str:
    """How a bound is said in an error: ``must be between 1 and 10000000``."""
    if low is not None and high is not None:
        return f"must be between {low} and {high}"
    return f"must be at least {low}" if low is not None else f"must be at most {high}"


def shadowed_bounds(model: type[BaseModel], model_name: str) -> list[str]:
    """Fields bounded twice the same way, where pydantic applies the type's bound and ignores the field's:
    ``inputs: Inputs = Field(max_length=1)`` still takes ``MAX_INPUTS``. Refused at start-up, with the form
    that works, rather than ignored."""
    problems = []
    for name, info in model.model_fields.items():
        kinds: dict[str, list[Any]] = {}
        for constraint in info.metadata:
            for attribute in ("max_length", "min_length", "ge", "gt", "le", "lt"):
                if getattr(constraint, attribute, None) is not None:
                    kinds.setdefault(attribute, []).append(getattr(constraint, attribute))
        for attribute, values in kinds.items():
            tightest = min(values) if attribute in ("max_length", "le", "lt") else max(values)
            if values[-1] != tightest:  # pydantic applies the last one
                problems.append(
                    f"{model_name}.{name}: its {attribute}={tightest} is ignored (its type's own "
                    f"{attribute}={values[-1]} wins): write {name}: Annotated[<its type>, "
                    f"Field({attribute}={tightest})] instead of = Field(...)"
                )
    return problems


def clamp_deadline(seconds: int) -> int:
    """A deadline within the templates' DeadlineSeconds range."""
    return min(max(int(seconds), DEADLINE_RANGE[0]), DEADLINE_RANGE[1])


def job_deadline(function: BusinessFunction, params: Any) -> int:
    """The function's deadline as the job records it and its stack gets it."""
    return clamp_deadline(function.deadline_seconds(params))


def job_stack_parameters(
    function: BusinessFunction,
    params: Any,
    *,
    job_id: str,
    deadline_seconds: int,
    artifact_url: str,
    token: str,
    fixed: Mapping[str, str],
) -> dict[str, str]:
    """Every parameter of one job's stack: the platform's, then the function's own (whitelisted).
    ``artifact_url``: the presigned GET of the function's worker artifact at the job's version; ``token``:
    the attempt's worker channel token."""
    own = function.stack_parameters(params)
    stray = sorted(set(own) - set(function.stack_parameter_names))
    if stray:
        raise errors.FunctionError(f"function {function.name} set undeclared stack parameters {stray}")
    instance_type = function.instance_type(params)
    if instance_type not in function.instance_types:
        raise errors.FunctionError(f"function {function.name} chose {instance_type}, not in its allow-list")
    platform = {
        **{k: v for k, v in fixed.items() if k in PLATFORM_PARAMETERS},
        "JobId": job_id,
        "InstanceType": instance_type,
        "DeadlineSeconds": str(clamp_deadline(deadline_seconds)),  # records from before the clamp too
        "WorkerArtifactUrl": artifact_url,
        "WorkerToken": token,
    }
    return {**own, **platform}


# ---- the registry ------------------------------------------------------------------------------------------
class FunctionRegistryError(Exception):
    """The installed or enabled functions are not usable; raised at start-up, never per request."""


@dataclass(frozen=True)
class Registry:
    """The enabled functions, by name, with the operator's limits for each."""

    functions: Mapping[str, BusinessFunction]
    limits: Mapping[str, BaseModel]

    def get(self, name: str) -> BusinessFunction:
        function = self.functions.get(name)
        if function is None:
            raise errors.NoSuchFunctionError(f"no function {name}")
        return function

    def __iter__(self) -> Iterator[BusinessFunction]:
        return iter(self.functions[name] for name in sorted(self.functions))

    def __contains__(self, name: object) -> bool:
        return name in self.functions

    def error_codes(self) -> list[str]:
        """Every code a job's ``error.code`` may hold here: the platform's and the enabled functions'."""
        own = {code for function in self for code in function.error_codes}
        return sorted({code.value for code in JobErrorCode} | own)

    def catalog(self) -> list[dict[str, Any]]:
        return [catalog_entry(function, self.limits[function.name]) for function in self]


def load_function(entry: metadata.EntryPoint) -> BusinessFunction:
    """Load and check one entry point; every problem is a FunctionRegistryError naming it."""
    where = f"plug-in {entry.name!r} ({entry.value})"
    try:
        loaded = entry.load()
    except Exception as exc:
        raise FunctionRegistryError(f"{where} cannot be imported: {type(exc).__name__}: {exc}") from exc
    if isinstance(loaded, type) and issubclass(loaded, BusinessFunction):
        try:
            loaded = loaded()
        except TypeError as exc:
            raise FunctionRegistryError(f"{where} is incomplete: {exc}") from exc
    if not isinstance(loaded, BusinessFunction):
        raise FunctionRegistryError(f"{where} is not a pijobs BusinessFunction")
    check_function(loaded, where)
    if loaded.name != entry.name:
        raise FunctionRegistryError(f"{where} is registered as {entry.name!r} but is named {loaded.name!r}")
    return loaded


def check_function(function: BusinessFunction, where: str) -> None:
    """The contract's rules that a class cannot express; a broken plug-in fails here, at start-up."""
    problems: list[str] = []
    for attribute in ("name", "version", "title", "description", "request_model", "resource_types"):
        if not hasattr(function, attribute):
            problems.append(f"no {attribute}")
    if problems:
        raise FunctionRegistryError(f"{where}: " + "; ".join(problems))
    if not NAME_PATTERN.fullmatch(function.name):
        problems.append(f"name {function.name!r} is not lowercase letters, digits and dashes (2-40)")
    if not VERSION_PATTERN.fullmatch(function.version):
        problems.append(f"version {function.version!r} is not letters, digits, '.', '_' or '-'")
    for model_name in ("request_model", "limits_model"):
        model = getattr(function, model_name)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            problems.append(f"{model_name} is not a pydantic model")
        elif model.model_config.get("extra") != "forbid":
            problems.append(f"{model_name} must forbid extra fields (model_config extra='forbid')")
        else:
            problems += shadowed_bounds(model, model_name)
    unsupported = sorted(set(function.resource_types) - SUPPORTED_RESOURCE_TYPES)
    if unsupported:
        problems.append(f"the platform's service role cannot create {unsupported}")
    allowed = set(getattr(function, "instance_types", ()))
    if not allowed or not allowed <= set(SUPPORTED_INSTANCE_TYPES):
        problems.append(f"instance_types must be a non-empty subset of {list(SUPPORTED_INSTANCE_TYPES)}")
    if getattr(function, "accepts_inputs", False) and "inputs" not in getattr(
        function.request_model, "model_fields", {}
    ):
        problems.append(
            "accepts_inputs needs an 'inputs' field (pijobs.shared.inputs.Inputs) in request_model"
        )
    reserved = sorted(set(function.stack_parameter_names) & RESERVED_PARAMETERS)
    if reserved:
        problems.append(f"stack_parameter_names may not include the platform's {reserved}")
    volume = getattr(function, "root_volume_gib", None)
    low, high = ROOT_VOLUME_RANGE
    if isinstance(volume, bool) or not isinstance(volume, int) or not low <= volume <= high:
        problems.append(f"root_volume_gib must be an integer between {low} and {high}")
    for parameter in function.stack_parameter_names:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,63}", parameter):
            problems.append(f"stack parameter {parameter!r} is not a CloudFormation parameter name")
    path = function.template_path()
    if path is not None and not path.is_file():
        problems.append(f"its template {function.template} is not beside its module")
    if problems:
        raise FunctionRegistryError(f"{where}: " + "; ".join(problems))


def installed_functions(
    entries: Iterable[metadata.EntryPoint] | None = None,
) -> dict[str, BusinessFunction]:
    """Every function installed in this environment, by name. Duplicates and broken plug-ins are refused."""
    if entries is None:
        return dict(_installed())
    found: dict[str, BusinessFunction] = {}
    sources: dict[str, str] = {}
    for entry in entries:
        if entry.name in sources:
            if sources[entry.name] == entry.value:
                continue  # the same distribution seen twice on sys.path
            raise FunctionRegistryError(
                f"function {entry.name!r} is registered twice: by {sources[entry.name]} and by {entry.value}"
            )
        sources[entry.name] = entry.value
        found[entry.name] = load_function(entry)
    return found


@lru_cache(maxsize=1)
def _installed() -> dict[str, BusinessFunction]:
    return installed_functions(metadata.entry_points(group=ENTRY_POINT_GROUP))


def entry_point_of(function: BusinessFunction) -> str:
    """``module:attribute`` of a loaded function, as its entry point names it (for packaging)."""
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == function.name:
            return str(entry.value)
    return f"{type(function).__module__}:{type(function).__qualname__}"


def load_registry(
    enabled: Iterable[str] | None,
    limits: Mapping[str, Mapping[str, Any]] | None = None,
    installed: Mapping[str, BusinessFunction] | None = None,
) -> Registry:
    """The enabled functions (None: every installed one) with the operator's limits applied."""
    available = installed_functions() if installed is None else dict(installed)
    names = sorted(available) if enabled is None else sorted(dict.fromkeys(enabled))
    missing = [name for name in names if name not in available]
    if missing:
        raise FunctionRegistryError(
            f"enabled functions {missing} are not installed (installed: {sorted(available) or 'none'})"
        )
    limits = dict(limits or {})
    stray = sorted(set(limits) - set(names))
    if stray:
        raise FunctionRegistryError(f"limits are set for functions that are not enabled: {stray}")
    functions = {name: available[name] for name in names}
    applied: dict[str, BaseModel] = {}
    for name, function in functions.items():
        try:
            applied[name] = function.limits_model.model_validate(limits.get(name, {}))
        except PydanticValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise FunctionRegistryError(f"limits for function {name!r}: {problems}") from exc
    return Registry(functions=functions, limits=applied)


def parse_enabled(value: str | None) -> list[str] | None:
    """The operator's setting: ``"pi,word-count"``; empty or ``"*"`` means every installed function."""
    if value is None or value.strip() in ("", "*"):
        return None
    return [name.strip() for name in value.split(",") if name.strip()]
