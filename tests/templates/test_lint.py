"""Both templates pass cfn-lint with no errors and no warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cfnlint", reason="cfn-lint is in the templates dependency group")

from cfnlint.api import ManualArgs, lint

INFRA = Path(__file__).resolve().parents[2] / "infra"
TEMPLATES = sorted(p for p in INFRA.glob("*.yaml") if not p.name.startswith("."))


def test_both_templates_are_there() -> None:
    assert {p.name for p in TEMPLATES} >= {"primary.yaml", "business_function.yaml"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_finds_nothing(template: Path) -> None:
    matches = lint(template.read_text(), config=ManualArgs(regions=["us-east-1", "eu-west-1"]))

    findings = [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches if m.rule.id[0] in "EW"]
    assert findings == []
