#!/usr/bin/env bash
# Set up everything the demo and the tests need on this machine. Idempotent:
# a second run only checks. Needs root (or sudo) for Debian packages and libvirtd.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
say() { printf '[setup] %s\n' "$*" >&2; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. libvirt and qemu from Debian's packages.
# docker-registry (the distribution registry 2.8), skopeo and umoci: the lab's OCI registry, pushing and
# pulling containerDisks (services/virtops/lab/registry.py, services/virtops/agent/images.py); htpasswd (apache2-utils)
# for the tests' registry that wants credentials.
packages=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils libvirt-dev pkg-config busybox-static shellcheck
          xorriso docker-registry skopeo umoci apache2-utils)
# OVMF: the UEFI firmware of VMIs with spec.domain.firmware.bootloader.efi.
packages+=(ovmf)
# mmdebstrap, SYSLINUX, mtools, dosfstools and sfdisk build the Debian cloud image without mounting anything
# (services/virtops/lab/debian_image.py).
packages+=(mmdebstrap syslinux syslinux-common mtools dosfstools fdisk)
# systemd-nspawn boots the `host` molecule scenario's systemd host (services/virtops/lab/systemd_host.py).
packages+=(systemd-container)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (a few minutes on a fresh machine)"
  sudo_ apt-get update -q
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's docker-registry package runs a registry on *:5000 where services may start: the lab runs its own
# on loopback, so the system one is stopped and disabled.
if [ -x /etc/init.d/docker-registry ] && [[ " ${missing[*]} " == *" docker-registry "* ]]; then
  if [ -d /run/systemd/system ]; then sudo_ systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  else sudo_ /etc/init.d/docker-registry stop >/dev/null 2>&1 || true; sudo_ update-rc.d docker-registry disable >/dev/null 2>&1 || true
  fi
fi

# 2. libvirt daemons. Without systemd we start them ourselves (virtlogd first:
#    a domain start needs its socket).
"$root/hack/libvirt-up.sh"

# 3. Python tools in .venv, reinstalled only when requirements change.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements-dev.txt services/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python requirements into .venv (pip progress follows)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install --progress-bar off -r requirements-dev.txt -e "services[node]"
  echo "$want" > "$stamp"
fi

# 4. This checkout as the collection virtops.kubevirt (ansible.cfg points here).
mkdir -p .cache/collections/ansible_collections/virtops
ln -sfn "$root" .cache/collections/ansible_collections/virtops/kubevirt

# 5. ansible-test sanity offline: it runs this file instead of downloading get-pip.
mkdir -p ~/.ansible/test/cache
cp hack/get_pip_offline.py ~/.ansible/test/cache/get_pip_24_2.py

# 6. The lab's binaries (cold: ~10 minutes on 2 cores; warm: instant).
.venv/bin/virtops-lab build >/dev/null
# 7. The guest image from Debian's kernel and busybox (cold: under a minute; warm: instant).
.venv/bin/virtops-lab guest >/dev/null
# 8. The Debian 12 cloud image virtops/debian:12 (cold: 2-5 minutes, mostly mmdebstrap; warm: instant).
.venv/bin/virtops-lab debian >/dev/null
say "ready"
