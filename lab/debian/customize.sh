#!/bin/sh
# mmdebstrap --customize-hook: runs on the build host with the finished root directory as $1.
set -eu
root=$1
uuid=$2
src=$3  # lab/debian

install -D -m 0644 "$src/cloud.cfg" "$root/etc/cloud/cloud.cfg.d/90-virtops.cfg"
install -D -m 0644 "$src/dhcp.network" "$root/etc/systemd/network/99-virtops-dhcp.network"
install -D -m 0644 "$src/ssh-hostkeys.conf" "$root/etc/systemd/system/ssh.service.d/virtops-hostkeys.conf"
install -D -m 0644 "$src/modprobe-blacklist.conf" "$root/etc/modprobe.d/virtops.conf"

# Units a VM started from a containerDisk does not need; each costs seconds of boot under TCG. logind (and the
# D-Bus it needs, left out of the image) is not needed to log in on a console or over SSH (no pam_systemd).
# getty-static starts gettys on tty2-6 when logind is missing: nobody logs in on a VM's VGA text console.
chroot "$root" systemctl mask --quiet \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
  systemd-pstore.service dpkg-db-backup.timer systemd-logind.service getty-static.service
chroot "$root" systemctl enable --quiet systemd-networkd.service

printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$uuid" > "$root/etc/fstab"
echo debian > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# Every VM makes its own identity on first boot: machine-id (systemd) and SSH host keys (cloud-init).
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# No apt lists in the image: they are 40 MB and stale by the time anyone boots it.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
