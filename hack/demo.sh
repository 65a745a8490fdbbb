#!/usr/bin/env bash
# README command 1: set everything up and walk through the lifecycle on the local lab.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Set up this machine (packages, libvirt, .venv, lab binaries)"
hack/setup.sh

step "Lab: control plane on loopback + KubeVirt API (ansible-playbook playbooks/lab.yml)"
export ANSIBLE_CONFIG=$root/ansible.cfg
.venv/bin/ansible-playbook playbooks/lab.yml

export KUBECONFIG=/tmp/virtops-lab/default/kubeconfig
export PATH=/tmp/virtops-lab/default/bin:$PATH   # the lab's own kubectl, same release as the server
ns=virtops-demo
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
kubectl -n "$ns" delete vmi testvmi --ignore-not-found --wait=true >/dev/null

step "kubectl create -f examples/vmi-testvmi.yaml"
kubectl -n "$ns" create -f examples/vmi-testvmi.yaml

step "kubectl get vmis"
kubectl -n "$ns" get vmis

step "kubectl get vmis testvmi -o wide"
kubectl -n "$ns" get vmis testvmi -o wide

step "An invalid VMI is rejected with the field named (examples/vmi-invalid.yaml)"
if kubectl -n "$ns" create -f examples/vmi-invalid.yaml; then
  echo "BUG: the invalid VMI was accepted" >&2; exit 1
fi

step "kubectl delete vmis testvmi"
kubectl -n "$ns" delete vmis testvmi

step "Done in $(( $(date +%s) - start ))s"
cat <<MSG
The lab keeps running so you can explore:
  export KUBECONFIG=$KUBECONFIG PATH=/tmp/virtops-lab/default/bin:\$PATH
  kubectl get vmis -A
Stop it with: .venv/bin/virtops-lab down    (or: ansible-playbook playbooks/lab.yml -e lab_state=down)
MSG
