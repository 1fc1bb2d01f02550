"""One copy of each fact: what lives in Python is what the templates, the console and the document say.

The templates and the console's script cannot import Python, so they are checked against it here, in the
default test run (tests/templates checks more, with cfn-lint and moto, in its own environment).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pijobs import deploy, job_template
from pijobs.api_handler.routes import ALL_OPERATIONS, OPERATIONS, WORKER_OPERATIONS, openapi_document
from pijobs.local.cfn import load_template, resources_of_type
from pijobs.shared.capacity import (
    API_KEY_ID_CHARS,
    ITEM_BUDGET,
    ITEM_LIMIT_BYTES,
    MAX_LIVE_JOBS,
    CapacityCounter,
    capacity_item,
    item_size,
)
from pijobs.shared.channel import TOKEN_PATTERN
from pijobs.shared.functions import (
    DEADLINE_RANGE,
    NAME_PATTERN,
    PLATFORM_PARAMETERS,
    RESERVED_PARAMETERS,
    SUPPORTED_INSTANCE_TYPES,
    BusinessFunction,
    installed_functions,
    load_registry,
)
from pijobs.shared.ids import ID_PATTERN
from pijobs.shared.job_errors import JobErrorCode
from pijobs.shared.settings import (
    ApiSettings,
    DispatcherSettings,
    ReaperSettings,
    VerifierSettings,
    WebhookSettings,
)
from pijobs.shared.webhooks import ALL_EVENT_TYPES

REPO = Path(__file__).resolve().parents[2]
PRIMARY = load_template(REPO / "infra" / "primary.yaml")
# Each Lambda's handler and the settings it reads its environment into.
SETTINGS = {
    "pijobs.api_handler.handler.lambda_handler": ApiSettings,
    "pijobs.dispatcher.handler.lambda_handler": DispatcherSettings,
    "pijobs.dispatcher.reaper.lambda_handler": ReaperSettings,
    "pijobs.dispatcher.verifier.lambda_handler": VerifierSettings,
    "pijobs.api_handler.notifier.notifier_handler": WebhookSettings,
    "pijobs.api_handler.notifier.sender_handler": WebhookSettings,
}


def _unanchored(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


def _env_names(settings: Any) -> dict[str, bool]:
    """The variables a settings model reads, each with whether it is required."""
    return {
        field.alias or f"PIJOBS_{name.upper()}": field.is_required()
        for name, field in settings.model_fields.items()
    }


@pytest.fixture(scope="module", params=sorted(installed_functions()))
def function_template(request: pytest.FixtureRequest) -> tuple[BusinessFunction, dict[str, Any]]:
    """A function's job template as it is uploaded (the platform renders it from Python)."""
    function = installed_functions()[request.param]
    return function, yaml.safe_load(job_template.body(function))


def test_a_job_templates_parameters_are_the_platforms_bounds(
    function_template: tuple[BusinessFunction, dict[str, Any]],
) -> None:
    function, template = function_template
    parameters = template["Parameters"]
    assert parameters["JobId"]["AllowedPattern"] == _unanchored(ID_PATTERN)
    assert parameters["WorkerToken"]["AllowedPattern"] == TOKEN_PATTERN.pattern
    assert (parameters["DeadlineSeconds"]["MinValue"], parameters["DeadlineSeconds"]["MaxValue"]) == (
        DEADLINE_RANGE
    )
    assert parameters["InstanceType"]["AllowedValues"] == list(function.instance_types)
    assert set(function.instance_types) <= set(SUPPORTED_INSTANCE_TYPES)
    assert set(parameters) == set(PLATFORM_PARAMETERS) | {"ImageId"} | set(function.stack_parameter_names)
    assert set(parameters) - set(function.stack_parameter_names) <= RESERVED_PARAMETERS
    volume = template["Resources"]["WorkerInstance"]["Properties"]["BlockDeviceMappings"][0]["Ebs"]
    assert volume["VolumeSize"] == function.root_volume_gib


def test_no_allowed_maxactivestacks_grows_the_capacity_item_past_dynamodbs_limit() -> None:
    """One item holds every live job (job id -> owner, owner -> count): at the most live jobs any setting
    allows, each of its own tenant (the largest the item gets), it stays within its budget of 400 KB."""
    parameter = PRIMARY["Parameters"]["MaxActiveStacks"]
    assert parameter["MaxValue"] == MAX_LIVE_JOBS
    bounds = {m.le for m in DispatcherSettings.model_fields["max_active_stacks"].metadata if hasattr(m, "le")}
    assert bounds == {MAX_LIVE_JOBS}
    with pytest.raises(ValueError, match="at most"):
        CapacityCounter(None, "t", default_limit=1).set_limit(MAX_LIVE_JOBS + 1)

    largest = item_size(capacity_item(MAX_LIVE_JOBS, tenants=MAX_LIVE_JOBS))
    assert largest <= ITEM_BUDGET * ITEM_LIMIT_BYTES
    # and owners twice as long as API Gateway's key ids still fit under the limit itself
    assert item_size(
        capacity_item(MAX_LIVE_JOBS, tenants=MAX_LIVE_JOBS, owner_chars=2 * API_KEY_ID_CHARS)
    ) < (ITEM_LIMIT_BYTES)


def test_the_worker_python_is_the_one_its_artifact_is_built_for() -> None:
    assert deploy.WORKER_PYTHON == job_template.WORKER_PYTHON
    assert f"python{deploy.WORKER_PYTHON} -m pijobs.worker" in job_template.USER_DATA


def test_no_function_ships_a_template_of_its_own() -> None:
    """pi, sql and word-count declare what differs; the platform renders the rest."""
    assert {name: f.template for name, f in installed_functions().items()} == dict.fromkeys(
        installed_functions()
    )
    shipped = [*REPO.glob("worker/**/template.yaml"), *REPO.glob("tests/plugins/**/*.yaml")]
    assert [path for path in shipped if "build" not in path.relative_to(REPO).parts] == []


def test_the_service_role_launches_the_supported_instance_types_only() -> None:
    role = resources_of_type(PRIMARY, "AWS::IAM::Role")["CfnServiceRole"]
    conditions = [
        statement["Condition"]["StringEquals"]["ec2:InstanceType"]
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if "ec2:InstanceType" in statement.get("Condition", {}).get("StringEquals", {})
    ]
    assert conditions == [list(SUPPORTED_INSTANCE_TYPES)]


def test_the_enabled_functions_parameter_takes_the_names_python_takes() -> None:
    name = NAME_PATTERN.pattern
    assert PRIMARY["Parameters"]["EnabledFunctions"]["AllowedPattern"] == f"[*]|{name}(,{name})*"


def test_each_lambda_is_given_exactly_what_its_settings_read() -> None:
    functions = resources_of_type(PRIMARY, "AWS::Lambda::Function")
    assert {props["Handler"] for props in functions.values()} == set(SETTINGS)
    for props in functions.values():
        given = set((props.get("Environment") or {}).get("Variables") or {})
        read = _env_names(SETTINGS[props["Handler"]])
        assert given - {"POWERTOOLS_SERVICE_NAME", "LOG_LEVEL"} <= set(read), props["Handler"]
        assert {name for name, required in read.items() if required} <= given, props["Handler"]


def test_the_consoles_job_links_match_a_job_id() -> None:
    script = (REPO / "api_handler" / "static" / "console.js").read_text()
    links = re.findall(r"/\^\\/jobs\\/\(([^)]*)\)\$/", script)
    assert links == [_unanchored(ID_PATTERN)]


def test_the_console_takes_the_webhook_event_types_from_the_api() -> None:
    """The Webhooks page offers the event types of the API's document, so it names none of them itself."""
    static = REPO / "api_handler" / "static"
    page = (static / "console.js").read_text() + (static / "console.html").read_text()
    assert [t for t in ALL_EVENT_TYPES if t in page] == []


class _TaggedLoader(yaml.SafeLoader):
    """CloudFormation's short forms kept as their long forms (``!Ref X`` is ``{"Ref": "X"}``)."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


_TaggedLoader.add_multi_constructor("!", _tagged)


def _resource_path(resources: dict[str, Any], name: str) -> str:
    """``/jobs/{id}`` from a Resource's PathPart and its parents' (the root's id is a GetAtt)."""
    properties = resources[name]["Properties"]
    parent = properties["ParentId"]
    prefix = _resource_path(resources, parent["Ref"]) if isinstance(parent, dict) and "Ref" in parent else ""
    return f"{prefix}/{properties['PathPart']}"


def test_the_template_declares_the_route_table_and_nothing_else() -> None:
    """Each operation of api_handler/routes.py is one proxied method, needing a key exactly when the table
    says: a route added to the table and not to the template (or the reverse) fails here."""
    template = yaml.load((REPO / "infra" / "primary.yaml").read_text(), Loader=_TaggedLoader)
    resources = template["Resources"]
    methods = {
        (r["Properties"]["HttpMethod"], _resource_path(resources, r["Properties"]["ResourceId"]["Ref"])): r
        for r in resources.values()
        if r["Type"] == "AWS::ApiGateway::Method"
    }

    assert set(methods) == {(op.method, op.path) for op in ALL_OPERATIONS}
    for op in ALL_OPERATIONS:
        properties = methods[op.method, op.path]["Properties"]
        assert properties["ApiKeyRequired"] is op.api_key, op.path
        assert properties["AuthorizationType"] == "NONE"
        assert properties["Integration"]["Type"] == "AWS_PROXY"
        assert "${ApiHandlerFunction.Arn}" in properties["Integration"]["Uri"]["Fn::Sub"]
    # only the document and the console's page (which holds nothing and asks for a key)
    assert [op.path for op in OPERATIONS if not op.api_key] == ["/openapi.json", "/console"]
    # the worker channel: authenticated by a job's worker token, outside the customer's table
    assert [(op.path, op.api_key) for op in WORKER_OPERATIONS] == [("/worker/jobs/{id}/{operation}", False)]


def test_every_gateway_answer_says_nosniff() -> None:
    """API Gateway's own answers (a bad key, an unknown route, throttling) carry the header the API's do."""
    responses = resources_of_type(PRIMARY, "AWS::ApiGateway::GatewayResponse")
    assert responses
    for name, props in responses.items():
        headers = props.get("ResponseParameters") or {}
        assert headers.get("gatewayresponse.header.X-Content-Type-Options") == "'nosniff'", name


def _code_literals(path: Path) -> list[tuple[int, str]]:
    """(line, code) of each string given as a ``code=`` argument or a ``"code":`` value in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "code":
            value: ast.expr | None = node.value
        elif isinstance(node, ast.Dict):
            pairs = zip(node.keys, node.values, strict=True)
            value = next((v for k, v in pairs if isinstance(k, ast.Constant) and k.value == "code"), None)
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found.append((value.lineno, value.value))
    return found


def test_the_platforms_job_error_codes_are_spelled_in_one_place() -> None:
    platform = {code.value for code in JobErrorCode}
    runtime = [REPO / folder for folder in ("shared", "api_handler", "dispatcher", "worker")]
    spelled = [
        f"{path.relative_to(REPO)}:{line} {code}"
        for folder in runtime
        for path in folder.rglob("*.py")
        for line, code in _code_literals(path)
        if code in platform
    ]
    assert spelled == []


@pytest.mark.usefixtures("wordcount_plugin")
def test_a_function_refuses_jobs_with_the_codes_it_declares() -> None:
    for function in installed_functions().values():
        package = Path(inspect.getfile(type(function))).parent
        used = {code for path in package.rglob("*.py") for _, code in _code_literals(path)}
        assert used <= set(function.error_codes), function.name
        assert not set(function.error_codes) & {code.value for code in JobErrorCode}, function.name


def test_the_document_lists_every_job_error_code() -> None:
    registry = load_registry(None)
    doc = openapi_document(registry)
    schemas = doc["components"]["schemas"]

    assert schemas["ErrorInfo"]["properties"]["code"] == {"$ref": "#/components/schemas/JobErrorCode"}
    assert set(schemas["JobErrorCode"]["enum"]) == {c.value for c in JobErrorCode} | {
        code for function in registry for code in function.error_codes
    }
