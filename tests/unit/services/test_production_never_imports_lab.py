"""Production packages never import the dev lab, directly or through another virtops module, at any depth
(function-level imports included): a node or a cluster installs the services without the lab's reasons to exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import virtops

ROOT = Path(virtops.__file__).parent
PRODUCTION = ("virtops.api", "virtops.controller", "virtops.agent", "virtops.kube", "virtops.node", "virtops.pki")


def module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT.parent / rel / "__init__.py", ROOT.parent / rel.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def package_modules(name: str) -> list[str]:
    path = module_file(name)
    assert path is not None, f"{name} is not a module of the services"
    if path.name != "__init__.py":
        return [name]
    return [name + "." + ".".join(p.relative_to(path.parent).with_suffix("").parts).removesuffix(".__init__")
            if p != path else name for p in sorted(path.parent.rglob("*.py"))]


def imports_of(name: str) -> set[str]:
    """Every virtops module that name's source imports, anywhere in the file."""
    path = module_file(name)
    assert path is not None
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from virtops import lab`
    return {m for m in found if (m == "virtops" or m.startswith("virtops.")) and module_file(m)}


def chain_to_lab(start: str) -> list[str] | None:
    """The import chain from start to virtops.lab, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        chain = stack.pop()
        for imported in sorted(imports_of(chain[-1])):
            if imported == "virtops.lab" or imported.startswith("virtops.lab."):
                return [*chain, imported]
            if imported not in seen:
                seen.add(imported)
                stack.append([*chain, imported])
    return None


@pytest.mark.parametrize("module", [m for package in PRODUCTION for m in package_modules(package)])
def test_production_module_never_imports_the_lab(module):
    chain = chain_to_lab(module)
    assert chain is None, "production code imports the lab: " + " -> ".join(chain)


def test_the_walker_finds_an_import_of_the_lab_where_there_is_one():
    # The lab itself imports virtops.lab.* modules; the walker must find such an import (else the test above
    # could pass by seeing nothing).
    assert chain_to_lab("virtops.lab.cli") is not None
