"""Detached git worktrees of some commits, for the benches that compare commits in one run
(bench/pause_compare.py, bench/density_compare.py): each ref's services, CRDs and lab are its own, the bench
script is this checkout's."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Checkout:
    ref: str
    commit: str  # short
    tree: Path
    scratch: Path  # a directory for this comparison's files, removed with the worktrees

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with this checkout's services first on the Python path."""
        return {**base, "PYTHONPATH": str(self.tree / "services")}


@contextmanager
def checkouts(refs: list[str]) -> Iterator[list[Checkout]]:
    """A worktree per ref (in the order given), removed afterwards with everything under their scratch dir."""
    scratch = Path(tempfile.mkdtemp(prefix="virtops-compare-"))
    made: list[Checkout] = []
    try:
        for ref in refs:
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True,
                                    capture_output=True, text=True).stdout.strip()
            tree = scratch / commit
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                           capture_output=True)
            made.append(Checkout(ref, commit, tree, scratch))
        yield made
    finally:
        for checkout in made:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout.tree)],
                           check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def report(text: str, samples: Any, out: str | None) -> None:
    """Print a comparison; with ``out``, also write it there as compare.md beside its samples.json."""
    print(text)
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "compare.md").write_text(text)
        (out_dir / "samples.json").write_text(json.dumps(samples, indent=1))
