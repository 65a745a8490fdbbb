"""The guest agent's answers in KubeVirt's JSON shapes (what virtctl guestosinfo / userlist / fslist print)."""

from __future__ import annotations

from virtops.agent import guestinfo

# What qemu-ga 7.2 in the Debian guest and libvirt 9.0 give (abridged).
FSINFO = [
    {"name": "vda2", "mountpoint": "/", "type": "ext4", "used-bytes": 1107296256, "total-bytes": 2046640128,
     "disk": [{"serial": "", "bus-type": "virtio", "bus": 0, "unit": 0, "target": 0, "dev": "/dev/vda2",
               "pci-controller": {"domain": 0, "bus": 4, "slot": 0, "function": 0}}]},
    {"name": "vda1", "mountpoint": "/boot/efi", "type": "vfat", "used-bytes": 20971520, "total-bytes": 66059264,
     "disk": [{"serial": "disk-1", "bus-type": "virtio", "dev": "/dev/vda1"}]},
    {"name": "tmpfs", "mountpoint": "/run", "type": "tmpfs"},
]
TYPED = {"user.count": 2, "user.0.name": "debian", "user.0.login-time": 1764703000123,
         "user.1.name": "root", "user.1.domain": "", "user.1.login-time": 0,
         "hostname": "guest1", "timezone.name": "UTC", "timezone.offset": 0}
AGENT = {"version": "7.2.19", "supported_commands": [
    {"name": "guest-get-users", "enabled": True, "success-response": True},
    {"name": "guest-exec", "enabled": False},
]}
OS = {"id": "debian", "name": "Debian GNU/Linux", "prettyName": "Debian GNU/Linux 12 (bookworm)", "versionId": "12"}


def test_users_are_kubevirts_guest_os_users_with_login_time_in_seconds() -> None:
    assert guestinfo.user_list(guestinfo.users(TYPED)) == {"metadata": {}, "items": [
        {"userName": "debian", "loginTime": 1764703000.123},
        {"userName": "root"},  # no domain, no login time: left out, as KubeVirt's omitempty does
    ]}
    assert guestinfo.users({}) == []


def test_file_systems_keep_kubevirts_names_and_the_disks_bus() -> None:
    listed = guestinfo.filesystem_list(guestinfo.filesystems(FSINFO))
    assert listed["metadata"] == {}
    assert listed["items"][0] == {"diskName": "vda2", "mountPoint": "/", "fileSystemType": "ext4",
                                  "usedBytes": 1107296256, "totalBytes": 2046640128,
                                  "disk": [{"busType": "virtio"}]}
    assert listed["items"][1]["disk"] == [{"busType": "virtio", "serial": "disk-1"}]
    assert listed["items"][2] == {"diskName": "tmpfs", "mountPoint": "/run", "fileSystemType": "tmpfs",
                                  "usedBytes": 0, "totalBytes": 0}  # no disk: the key is left out


def test_guest_agent_info_is_kubevirts_guestosinfo() -> None:
    info = guestinfo.guest_agent_info(AGENT, TYPED, OS, FSINFO)
    assert info["guestAgentVersion"] == "7.2.19"
    assert info["supportedCommands"] == [{"name": "guest-get-users", "enabled": True}, {"name": "guest-exec"}]
    assert (info["hostname"], info["timezone"], info["os"]) == ("guest1", "UTC, 0", OS)
    assert [u["userName"] for u in info["userList"]] == ["debian", "root"]
    assert [d["mountPoint"] for d in info["fsInfo"]["disks"]] == ["/", "/boot/efi", "/run"]


def test_guestosinfo_shows_at_most_ten_users_and_file_systems_and_a_silent_guest_little() -> None:
    many = {"user.count": 12, **{f"user.{i}.name": f"u{i}" for i in range(12)}}
    info = guestinfo.guest_agent_info({}, many, {}, FSINFO * 5)
    assert len(info["userList"]) == len(info["fsInfo"]["disks"]) == 10
    assert guestinfo.guest_agent_info({}, {}, {}, []) == {"os": {}, "timezone": ", 0", "fsInfo": {"disks": []}}
