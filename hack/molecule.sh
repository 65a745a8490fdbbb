#!/usr/bin/env bash
# The molecule scenarios (extensions/molecule/), one after another, each with its time.
#   hack/molecule.sh                 # default security multinode faults
#   hack/molecule.sh default         # one
#   hack/molecule.sh guest           # a Debian VM configured over SSH: not in the default list (492 s,
#                                    # two Debian boots under TCG; docs/roles.md)
#   hack/molecule.sh host            # playbooks/site.yml over SSH on a fresh systemd host (a systemd-nspawn
#                                    # container): not in the default list either (docs/roles.md)
# Each scenario starts and removes its own lab (molecule-<scenario>) and node agents, also after a failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH=$PWD/.venv/bin:$PATH ANSIBLE_NOCOLOR=1 PY_COLORS=0
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(default security multinode faults)
summary=()
failed=0
for scenario in "${scenarios[@]}"; do
    start=$(date +%s)
    # The scenarios use fixed lab names and paths on this host (/tmp/virtops-lab/molecule-*, /tmp/virtops-molecule):
    # two checkouts running them at once overwrite each other's files, so runs on one machine take turns.
    if flock /tmp/virtops-molecule.lock molecule test --scenario-name "$scenario"; then result=passed
    else result=FAILED; failed=1; fi
    summary+=("molecule $scenario: $result in $(( $(date +%s) - start ))s")
    echo "${summary[-1]}"
done
printf '%s\n' "${summary[@]}"
exit $failed
