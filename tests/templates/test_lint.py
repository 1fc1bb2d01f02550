"""The primary template and every installed function's job template, as the platform renders and uploads it,
pass cfn-lint: no errors, no warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cfnlint", reason="cfn-lint is in the templates dependency group")

from cfnlint.api import ManualArgs, lint

from pijobs import job_template
from pijobs.shared.functions import installed_functions

INFRA = Path(__file__).resolve().parents[2] / "infra"
PRIMARY = {p.name: p.read_text() for p in sorted(INFRA.glob("*.yaml")) if not p.name.startswith(".")}
FUNCTIONS = {f"function {f.name}": job_template.body(f).decode() for f in installed_functions().values()}
TEMPLATES = {**PRIMARY, **FUNCTIONS}


def test_the_primary_and_every_function_template_are_there() -> None:
    assert "primary.yaml" in PRIMARY
    assert len(FUNCTIONS) == len(installed_functions()) >= 3  # pi, sql and the word-count plug-in


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_cfn_lint_finds_nothing(name: str) -> None:
    matches = lint(TEMPLATES[name], config=ManualArgs(regions=["us-east-1", "eu-west-1"]))

    findings = [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches if m.rule.id[0] in "EW"]
    assert findings == []


def test_cfn_lint_finds_what_is_wrong_in_a_rendered_template() -> None:
    """The lint above can fail: a broken rendering is reported."""
    broken = FUNCTIONS["function pi"].replace('"VolumeType": "gp3"', '"VolumeType": "gp9"')

    assert [m.rule.id for m in lint(broken, config=ManualArgs(regions=["us-east-1"]))]
