"""requirements.txt (what ansible-builder installs for the collection) lists every library the modules import,
and every other entry says it is there for kubernetes.core."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = {"yaml": "pyyaml"}  # import name -> distribution name where they differ


def imported_by_the_plugins() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    third_party = names - set(sys.stdlib_module_names) - {"ansible", "ansible_collections", "__future__"}
    return {DISTRIBUTION.get(name, name).lower() for name in third_party}


def requirements() -> dict[str, str]:
    """Distribution name -> the rest of its line (the version and any comment)."""
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", line.strip())
        if match:
            out[match.group(1).lower()] = match.group(2)
    return out


def test_every_library_the_modules_import_is_required():
    imported = imported_by_the_plugins()
    assert imported == {"urllib3", "pyyaml"}
    assert imported <= set(requirements())


def test_every_other_requirement_says_it_is_for_kubernetes_core():
    others = {name: rest for name, rest in requirements().items() if name not in imported_by_the_plugins()}
    assert others, "kubernetes.core's own needs are listed"
    for name, rest in others.items():
        assert rest.rstrip().endswith("# for kubernetes.core"), f"{name}: why is it required?"
