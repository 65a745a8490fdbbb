#!/usr/bin/env bash
# README command 1: set everything up and walk through the VMI lifecycle on the local lab,
# first with kubectl (as GitOps tools and people do), then with the collection's modules.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ms() { date +%s%3N; }

step "Set up this machine (packages, libvirt, .venv, lab binaries)"
hack/setup.sh

step "Lab: control plane + controller + one node agent + KubeVirt API (ansible-playbook playbooks/lab.yml)"
export ANSIBLE_CONFIG=$root/ansible.cfg
.venv/bin/ansible-playbook playbooks/lab.yml

export KUBECONFIG=/tmp/virtops-lab/default/kubeconfig
export PATH=/tmp/virtops-lab/default/bin:$PATH   # the lab's own kubectl, same release as the server
ns=virtops-demo
sub=/apis/subresources.kubevirt.io/v1/namespaces/$ns/virtualmachineinstances/testvmi
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
kubectl -n "$ns" delete vmi testvmi --ignore-not-found --wait=true >/dev/null
kubectl wait --for=jsonpath='{.status.conditions[?(@.type=="Available")].status}'=True \
  apiservice/v1.subresources.kubevirt.io --timeout=60s >/dev/null

# The guest's image is in the lab's OCI registry (docs/images.md); the example names it by a placeholder.
registry=$(.venv/bin/virtops-lab status --json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["registry"])')
step "kubectl create -f examples/vmi-demo.yaml  (its image: $registry/virtops/busybox-guest:1, the lab's registry)"
t0=$(ms)
sed "s|{{ lab_registry }}|$registry|" examples/vmi-demo.yaml | kubectl -n "$ns" create -f -
kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Running vmi/testvmi --timeout=120s >/dev/null
echo "Running after $(( $(ms) - t0 )) ms (the domain runs; the guest now boots: TCG, a few seconds)"
# The IP column fills in when the guest's own agent reports the address it took by DHCP.
kubectl -n "$ns" wait --for=jsonpath='{.status.interfaces[0].ipAddress}' vmi/testvmi --timeout=180s >/dev/null
echo "guest booted and reported its address after $(( $(ms) - t0 )) ms"

step "kubectl get vmis"
kubectl -n "$ns" get vmis

step "kubectl get vmis testvmi -o wide"
kubectl -n "$ns" get vmis testvmi -o wide
node=$(kubectl -n "$ns" get vmi testvmi -o jsonpath='{.status.nodeName}')
console=/tmp/virtops-lab/default/agents/$node/${ns}_testvmi/serial.log
echo "the guest's serial console ($console), last lines:"
tail -n 4 "$console" | sed 's/^/  | /'

step "pause  (virtctl pause vmi testvmi = PUT $sub/pause)"
t0=$(ms)
echo '{}' | kubectl replace --raw "$sub/pause" -f - >/dev/null
kubectl -n "$ns" wait --for=condition=Paused vmi/testvmi --timeout=60s >/dev/null
echo "Paused condition visible after $(( $(ms) - t0 )) ms"
kubectl -n "$ns" get vmi testvmi -o=jsonpath='{.status.conditions[?(@.type=="Paused")].message}'; echo
echo "libvirt: domain $ns""_testvmi is $(virsh -c qemu:///system domstate "${ns}_testvmi")"
kubectl -n "$ns" get vmis testvmi -o wide

step "pause again: KubeVirt answers 409 (the vmi_power module treats it as ok)"
echo '{}' | kubectl replace --raw "$sub/pause" -f - 2>&1 | sed 's/^/  /' || true

step "unpause  (virtctl unpause vmi testvmi)"
echo '{}' | kubectl replace --raw "$sub/unpause" -f - >/dev/null
t0=$(ms)
kubectl -n "$ns" wait --for=jsonpath='{.status.conditions[?(@.type=="Ready")].status}'=True vmi/testvmi \
  --timeout=60s >/dev/null
echo "Paused condition gone, Ready again after $(( $(ms) - t0 )) ms"
echo "libvirt: domain ${ns}_testvmi is $(virsh -c qemu:///system domstate "${ns}_testvmi")"
kubectl -n "$ns" get vmis testvmi -o wide

step "kubectl delete vmis testvmi  (stops the VM for good)"
t0=$(ms)
kubectl -n "$ns" delete vmis testvmi --wait=true
echo "deleted after $(( $(ms) - t0 )) ms: ACPI power button, the guest shut itself down (grace period 30 s)"

step "The same walk-through with the collection (ansible-playbook playbooks/lifecycle.yml)"
.venv/bin/ansible-playbook playbooks/lifecycle.yml -e vmi_namespace="$ns"

step "Done in $(( $(date +%s) - start ))s"
cat <<MSG
The lab keeps running so you can explore:
  export KUBECONFIG=$KUBECONFIG PATH=/tmp/virtops-lab/default/bin:\$PATH
  kubectl get vmis -A; ansible-playbook playbooks/lifecycle.yml -e keep_vmi=true
Stop it with: .venv/bin/virtops-lab down    (or: ansible-playbook playbooks/lab.yml -e lab_state=down)
MSG
