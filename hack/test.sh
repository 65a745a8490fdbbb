#!/usr/bin/env bash
# README command 2: the whole test suite. ruff, ansible-lint, unit tests, ansible-test sanity,
# then integration tests against a real lab (kube-apiserver + etcd) and libvirt, then the molecule scenarios.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Set up (idempotent)"
hack/setup.sh

step "Lint (ruff)"
.venv/bin/ruff check services tests hack   # plugins/ get ansible-test sanity (pylint, py3.8+ rules)

step "ansible-lint (production profile, .ansible-lint)"
PATH=$PWD/.venv/bin:$PATH .venv/bin/ansible-lint

# Every skip is printed (-rs), and one this machine should not have fails the run (tests/skip_policy.py).
# hack/setup.sh installs everything the tests need; only these depend on the machine itself.
allow_skips=()
python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null \
  || allow_skips+=(--allow-skip "no IPv6 loopback here")
[ "$(id -u)" = 0 ] || allow_skips+=(--allow-skip "restarting the host's libvirtd needs root")
pytest_() { PYTHONPATH=tests .venv/bin/python -m pytest -rs -p skip_policy "${allow_skips[@]}" "$@"; }

step "Unit tests"
pytest_ tests/unit -q

step "ansible-test sanity"
hack/sanity.sh

step "Integration tests (real lab and libvirt)"
pytest_ tests/integration -q -p no:cacheprovider --durations=25   # the slowest, to keep the total in budget

step "Molecule scenarios (extensions/molecule: the roles install the stack here; each scenario's time)"
hack/molecule.sh

step "All green"
