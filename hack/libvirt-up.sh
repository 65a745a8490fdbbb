#!/usr/bin/env bash
# Make sure libvirtd and virtlogd run. On a systemd host ask systemd; elsewhere
# (containers, CI sandboxes) start the daemons ourselves in daemon mode.
set -euo pipefail
say() { printf '[libvirt] %s\n' "$*" >&2; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ -d /run/systemd/system ]; then
  sudo_ systemctl start virtlogd.socket libvirtd.socket libvirtd.service
else
  # Without udev nobody applies Debian's rule for /dev/kvm (root:kvm 0660). libvirtd's qemu probe
  # then flips between "KVM available" and not, and every define hangs while it re-probes.
  if [ -c /dev/kvm ] && getent group kvm >/dev/null; then sudo_ chgrp kvm /dev/kvm; sudo_ chmod 0660 /dev/kvm; fi
  pgrep -x virtlogd >/dev/null || { say "starting virtlogd -d (no systemd)"; sudo_ virtlogd -d; }
  # Under a child subreaper (hack/subreaper.py): a PID 1 that is no real init may leave each exited qemu a
  # zombie for seconds, and libvirt's destroy waits for the zombie to go (~1.2 s per destroy here).
  # A libvirtd that just ended may linger as a zombie (its parent reaps late): that one does not count.
  pgrep -x -r R,S,D,T libvirtd >/dev/null || { say "starting libvirtd -d (no systemd; orphans reaped by hack/subreaper.py)"
                                    sudo_ python3 "$(dirname "$0")/subreaper.py" libvirtd -d; }
fi
for _ in $(seq 1 50); do
  sudo_ virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
say "libvirtd does not answer on qemu:///system"; exit 1
