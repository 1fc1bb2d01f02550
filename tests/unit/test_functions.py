"""The business-function registry and contract: discovery, enable list, start-up refusals, whitelists."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pijobs.functions import Inputs
from pijobs.shared import errors
from pijobs.shared.functions import (
    ENTRY_POINT_GROUP,
    PLATFORM_PARAMETERS,
    BusinessFunction,
    FunctionRegistryError,
    OutputFile,
    RunContext,
    installed_functions,
    job_stack_parameters,
    load_registry,
    parse_enabled,
)
from pijobs.worker.pi.function import PiFunction, PiParams


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = "hi"


class Echo(BusinessFunction):
    """A complete function; the broken ones below differ from it in one thing each."""

    name = "echo"
    version = "2"
    title = "Echo"
    description = "Echoes."
    request_model = EchoParams
    instance_types = ("c7i.large",)
    stack_parameter_names = ("Text",)

    def instance_type(self, params: Any) -> str:
        return "c7i.large"

    def deadline_seconds(self, params: Any) -> int:
        return 120

    def stack_parameters(self, params: Any) -> dict[str, str]:
        return {"Text": params.text}

    def run(self, ctx: RunContext) -> OutputFile:  # pragma: no cover - never run here
        raise NotImplementedError


class LooseParams(BaseModel):
    text: str = "hi"


class Loose(Echo):
    request_model = LooseParams


class NoTemplate(Echo):
    template = "missing.yaml"  # an own template, named but not shipped


class HugeDisk(Echo):
    root_volume_gib = 4096


class BadParameterName(Echo):
    stack_parameter_names = ("top-words",)


class Rds(Echo):
    resource_types: ClassVar[frozenset[str]] = frozenset({"AWS::RDS::DBInstance"})


class BadName(Echo):
    name = "Echo_Function"


class Huge(Echo):
    instance_types = ("p5.48xlarge",)


class TakesJobId(Echo):
    stack_parameter_names = ("JobId",)


class PicksTheImage(Echo):
    stack_parameter_names = ("ImageId",)


class Sneaky(Echo):
    def stack_parameters(self, params: Any) -> dict[str, str]:
        return {"Text": "x", "ImageId": "ami-evil"}


class OneInputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(max_length=1)  # the obvious form, which pydantic ignores for Inputs' own bound


class OneInputIgnored(Echo):
    accepts_inputs = True
    request_model = OneInputParams


class OneInputAnnotatedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Annotated[Inputs, Field(max_length=1)]  # the form that bounds it


class OneInput(Echo):
    accepts_inputs = True
    request_model = OneInputAnnotatedParams


class Incomplete(BusinessFunction):
    name = "incomplete"


def entry(name: str, attribute: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=f"{__name__}:{attribute}", group=ENTRY_POINT_GROUP)


def test_pi_registers_through_its_entry_point() -> None:
    installed = installed_functions()
    assert isinstance(installed["pi"], PiFunction)
    names = {e.name: e.value for e in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert names["pi"] == "pijobs.worker.pi.function:PiFunction"


def test_a_plug_in_class_is_loaded_and_checked() -> None:
    functions = installed_functions([entry("echo", "Echo")])
    assert list(functions) == ["echo"] and isinstance(functions["echo"], Echo)


@pytest.mark.parametrize(
    ("attribute", "problem"),
    [
        ("Loose", "request_model must forbid extra fields"),
        ("NoTemplate", "its template missing.yaml is not beside its module"),
        ("Rds", "cannot create ['AWS::RDS::DBInstance']"),
        ("Huge", "instance_types must be a non-empty subset"),
        ("HugeDisk", "root_volume_gib must be an integer between 8 and 1024"),
        ("BadParameterName", "stack parameter 'top-words' is not a CloudFormation parameter name"),
        ("TakesJobId", "may not include the platform's ['JobId']"),
        ("PicksTheImage", "may not include the platform's ['ImageId']"),
        ("Incomplete", "is incomplete"),
        ("OneInputIgnored", "request_model.inputs: its max_length=1 is ignored (its type's own max_length=8"),
        ("EchoParams", "is not a pijobs BusinessFunction"),
        ("Nowhere", "cannot be imported"),
    ],
)
def test_a_broken_plug_in_is_refused_at_start_up_with_its_name(attribute: str, problem: str) -> None:
    with pytest.raises(FunctionRegistryError) as info:
        installed_functions([entry("echo", attribute)])
    assert f"plug-in 'echo' ({__name__}:{attribute})" in str(info.value)
    assert problem in str(info.value)


def test_inputs_bounded_the_way_that_works_take_one_input() -> None:
    function = installed_functions([entry("echo", "OneInput")])["echo"]
    two = {"a": "0" * 32, "b": "1" * 32}
    assert function.parameter_schema()["properties"]["inputs"]["maxProperties"] == 1
    with pytest.raises(ValidationError, match="at most 1 item"):
        function.parse_params({"inputs": two})


def test_a_bad_name_is_refused() -> None:
    with pytest.raises(FunctionRegistryError, match="is not lowercase letters"):
        installed_functions([entry("Echo_Function", "BadName")])


def test_the_entry_point_name_must_be_the_function_name() -> None:
    with pytest.raises(FunctionRegistryError, match="registered as 'other' but is named 'echo'"):
        installed_functions([entry("other", "Echo")])


def test_two_plug_ins_with_one_name_are_refused() -> None:
    with pytest.raises(FunctionRegistryError, match="'echo' is registered twice"):
        installed_functions([entry("echo", "Echo"), entry("echo", "Sneaky")])
    # the same distribution found twice on sys.path is one plug-in
    assert list(installed_functions([entry("echo", "Echo"), entry("echo", "Echo")])) == ["echo"]


def test_the_enable_list_chooses_among_the_installed() -> None:
    installed = {"echo": Echo(), "pi": PiFunction()}
    assert [f.name for f in load_registry(None, installed=installed)] == ["echo", "pi"]
    registry = load_registry(["pi"], installed=installed)
    assert [f.name for f in registry] == ["pi"] and "echo" not in registry
    with pytest.raises(errors.NoSuchFunctionError):
        registry.get("echo")
    with pytest.raises(FunctionRegistryError, match=r"enabled functions \['nope'\] are not installed"):
        load_registry(["pi", "nope"], installed=installed)


@pytest.mark.parametrize(
    ("setting", "names"),
    [(None, None), ("", None), ("*", None), ("pi", ["pi"]), (" pi , word-count ", ["pi", "word-count"])],
)
def test_the_enabled_setting(setting: str | None, names: list[str] | None) -> None:
    assert parse_enabled(setting) == names


def test_limits_apply_per_function_and_bad_ones_stop_the_start() -> None:
    installed = {"pi": PiFunction()}
    registry = load_registry(["pi"], {"pi": {"max_digits": 500}}, installed=installed)
    assert registry.catalog()[0]["limits"] == {"max_digits": 500}
    pi = registry.get("pi")
    assert pi.bound_problems(PiParams(digits=501), registry.limits["pi"]) == [
        ("digits", "must be between 1 and 500")
    ]
    assert pi.bound_problems(PiParams(digits=500), registry.limits["pi"]) == []
    digits = registry.catalog()[0]["parameters"]["properties"]["digits"]
    assert (digits["minimum"], digits["maximum"]) == (1, 500)  # the deployment's bound, stated once
    with pytest.raises(FunctionRegistryError, match="limits for function 'pi': max_digits"):
        load_registry(["pi"], {"pi": {"max_digits": "lots"}}, installed=installed)
    with pytest.raises(FunctionRegistryError, match="limits for function 'pi': max_dgits"):
        load_registry(["pi"], {"pi": {"max_dgits": 5}}, installed=installed)
    with pytest.raises(FunctionRegistryError, match="not enabled: \\['echo'\\]"):
        load_registry(["pi"], {"echo": {}}, installed=installed)


def test_the_catalog_entry_is_public_and_complete() -> None:
    (entry_,) = load_registry(["pi"], installed={"pi": PiFunction()}).catalog()
    assert set(entry_) == {"name", "version", "title", "description", "parameters", "limits"}
    schema = entry_["parameters"]
    assert schema["additionalProperties"] is False and schema["required"] == ["digits"]
    assert schema["properties"]["digits"]["type"] == "integer"


FIXED = {"ApiUrl": "https://api.test", "SubnetId": "s", "VpcId": "v", "TableName": "t"}
ARTIFACT_URL = "https://art.s3.amazonaws.com/functions/echo/2/worker.zip?X-Amz-Signature=x"


def _stack_parameters(function: BusinessFunction, params: Any, **fixed: str) -> dict[str, str]:
    return job_stack_parameters(
        function,
        params,
        job_id="a" * 32,
        deadline_seconds=30,
        artifact_url=ARTIFACT_URL,
        token="t" * 43,
        fixed={**FIXED, **fixed},
    )


def test_stack_parameters_are_the_platform_s_and_the_function_s_whitelisted_ones() -> None:
    parameters = _stack_parameters(Echo(), EchoParams(text="yo"), ImageId="ami-operator-only")
    # Fixed values outside the set are dropped (an older deployment's TableName among them).
    assert set(parameters) == {*PLATFORM_PARAMETERS, "Text"}
    assert parameters["Text"] == "yo"
    assert parameters["WorkerArtifactUrl"] == ARTIFACT_URL and parameters["WorkerToken"] == "t" * 43
    assert parameters["DeadlineSeconds"] == "60"  # raised to the templates' minimum


def test_a_function_cannot_set_parameters_it_did_not_declare_or_override_the_platform() -> None:
    with pytest.raises(errors.FunctionError, match="undeclared stack parameters \\['ImageId'\\]"):
        _stack_parameters(Sneaky(), EchoParams())


def test_pi_sets_only_digits_and_picks_the_instance_by_size() -> None:
    pi = PiFunction()
    parameters = _stack_parameters(pi, PiParams(digits=70_000_000))
    assert set(parameters) - set(PLATFORM_PARAMETERS) == {"Digits"}
    assert parameters["InstanceType"] == "r7i.large"
    assert pi.instance_type(PiParams(digits=1000)) == "c7i.large"


def test_the_recorded_deadline_is_the_one_the_stack_gets() -> None:
    from pijobs.shared.functions import job_deadline

    assert job_deadline(Echo(), EchoParams()) == 120
    assert job_deadline(Sneaky(), EchoParams()) == 120

    class Quick(Echo):
        def deadline_seconds(self, params: Any) -> int:
            return 5

    assert job_deadline(Quick(), EchoParams()) == 60
