#!/usr/bin/env bash
# ansible-test sanity on a copy laid out as ansible_collections/virtops/kubevirt
# (ansible-test needs that layout; the copy holds exactly the files git would).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Outside the checkout: inside it, ansible-test would ask git and see the copy as ignored.
work=$(mktemp -d "${TMPDIR:-/tmp}/virtops-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/virtops/kubevirt
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -P -t "$dest"/
cd "$dest"
PATH=$root/.venv/bin:$PATH ansible-test sanity --local --python 3.11 --color no "$@"
