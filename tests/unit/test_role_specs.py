"""Every role variable in defaults/ is documented in meta/argument_specs.yml with the same default, and back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists()))
def test_defaults_and_argument_specs_agree(role):
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    options = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"][
        "options"]
    assert sorted(defaults) == sorted(options)
    for name, value in defaults.items():
        assert name.startswith(f"{role}_"), name
        assert options[name].get("description"), name
        if isinstance(value, str) and "{{" in value:
            continue  # a template: the spec shows it as text
        spec_default = options[name].get("default", "" if value == "" else None)
        assert spec_default == value, name


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "vars" / "main.yml").exists()))
def test_private_variables_are_underscored(role):
    private = yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text()) or {}
    assert all(name.startswith(f"_{role}_") for name in private), sorted(private)
