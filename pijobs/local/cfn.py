"""Reading the primary template where the local stand-ins need what it declares (gateway responses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _TemplateLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A CloudFormation template, its short-form functions (!Ref, !Sub, ...) read as None. LibYAML's safe
    loader where PyYAML has it: the pure-Python one takes a second over the primary template."""


_TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def load_template(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TemplateLoader)  # a safe loader
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """``{logical id: properties}`` of every resource of ``resource_type``."""
    return {
        name: resource.get("Properties") or {}
        for name, resource in (template.get("Resources") or {}).items()
        if resource.get("Type") == resource_type
    }
