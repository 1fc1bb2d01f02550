"""The primary template and every installed function's template pass cfn-lint: no errors, no warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cfnlint", reason="cfn-lint is in the templates dependency group")

from cfnlint.api import ManualArgs, lint
from pijobs.shared.functions import installed_functions

INFRA = Path(__file__).resolve().parents[2] / "infra"
FUNCTION_TEMPLATES = [f.template_path() for f in installed_functions().values()]
TEMPLATES = sorted(p for p in INFRA.glob("*.yaml") if not p.name.startswith(".")) + FUNCTION_TEMPLATES


def test_the_primary_and_every_function_template_are_there() -> None:
    assert "primary.yaml" in {p.name for p in TEMPLATES}
    assert len(FUNCTION_TEMPLATES) == len(installed_functions()) >= 1


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_cfn_lint_finds_nothing(template: Path) -> None:
    matches = lint(template.read_text(), config=ManualArgs(regions=["us-east-1", "eu-west-1"]))

    findings = [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches if m.rule.id[0] in "EW"]
    assert findings == []
