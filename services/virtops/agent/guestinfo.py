"""What the qemu guest agent says, in KubeVirt's shapes (kubevirt.io/api core/v1).

KubeVirt's virt-launcher reads the guest's users through libvirt's virDomainGetGuestInfo (login time in
milliseconds, given out in seconds) and its file systems with the guest agent's own guest-get-fsinfo; virt-api
serves them as ``VirtualMachineInstanceGuestOSUserList`` and ``VirtualMachineInstanceFileSystemList``
(``{"metadata": {}, "items": [...]}``, no kind: virt-handler fills in none). Fields KubeVirt marks omitempty are
left out when empty, so ``virtctl userlist`` / ``virtctl fslist`` print what they print against KubeVirt.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def users(info: Obj) -> list[Obj]:
    """VirtualMachineInstanceGuestOSUser items from libvirt's typed guest info (``user.N.name``, ``.domain``,
    ``.login-time`` in ms)."""
    result = []
    for i in range(int(info.get("user.count") or 0)):
        user: Obj = {"userName": str(info.get(f"user.{i}.name") or "")}
        if info.get(f"user.{i}.domain"):
            user["domain"] = str(info[f"user.{i}.domain"])
        login_ms = int(info.get(f"user.{i}.login-time") or 0)
        if login_ms > 0:
            user["loginTime"] = login_ms / 1000
        result.append(user)
    return result


def filesystems(fsinfo: list[Obj]) -> list[Obj]:
    """VirtualMachineInstanceFileSystem items from guest-get-fsinfo's answer (``name``, ``mountpoint``, ``type``,
    ``used-bytes``, ``total-bytes``, ``disk[].serial``/``bus-type``)."""
    result = []
    for fs in fsinfo or []:
        item: Obj = {"diskName": str(fs.get("name") or ""), "mountPoint": str(fs.get("mountpoint") or ""),
                     "fileSystemType": str(fs.get("type") or ""), "usedBytes": int(fs.get("used-bytes") or 0),
                     "totalBytes": int(fs.get("total-bytes") or 0)}
        disks = []
        for disk in fs.get("disk") or []:
            entry: Obj = {"busType": str(disk.get("bus-type") or "")}
            if disk.get("serial"):
                entry["serial"] = str(disk["serial"])
            disks.append(entry)
        if disks:
            item["disk"] = disks
        result.append(item)
    return result


def user_list(items: list[Obj]) -> Obj:
    """VirtualMachineInstanceGuestOSUserList, as virt-api answers ``…/userlist``."""
    return {"metadata": {}, "items": items}


def filesystem_list(items: list[Obj]) -> Obj:
    """VirtualMachineInstanceFileSystemList, as virt-api answers ``…/filesystemlist``."""
    return {"metadata": {}, "items": items}


# KubeVirt's guestosinfo shows at most this many users and file systems (virt-launcher's GetGuestInfo); the
# userlist and filesystemlist subresources show all.
GUEST_INFO_LIMIT = 10


def commands(info: Obj) -> list[Obj]:
    """GuestAgentCommandInfo items from guest-info's ``supported_commands`` (``enabled`` only when true)."""
    result = []
    for cmd in info.get("supported_commands") or []:
        entry: Obj = {"name": str(cmd.get("name") or "")}
        if cmd.get("enabled"):
            entry["enabled"] = True
        result.append(entry)
    return result


def guest_agent_info(agent: Obj, system: Obj, os_info: Obj, fsinfo: list[Obj]) -> Obj:
    """VirtualMachineInstanceGuestAgentInfo, as virt-api answers ``…/guestosinfo``: the agent's version and commands
    (guest-info), hostname, timezone (``"ZONE, OFFSET"``) and users from libvirt's typed guest info (``system``),
    the OS (VirtualMachineInstanceGuestOSInfo, the status.guestOSInfo the agent keeps) and the file systems."""
    result: Obj = {}
    if agent.get("version"):
        result["guestAgentVersion"] = str(agent["version"])
    if commands(agent):
        result["supportedCommands"] = commands(agent)
    if system.get("hostname"):
        result["hostname"] = str(system["hostname"])
    result["os"] = dict(os_info)
    # KubeVirt formats whatever it has, so a guest without a timezone answer shows ", 0".
    result["timezone"] = f"{system.get('timezone.name') or ''}, {int(system.get('timezone.offset') or 0)}"
    people = users(system)[:GUEST_INFO_LIMIT]
    if people:
        result["userList"] = people
    result["fsInfo"] = {"disks": filesystems(fsinfo)[:GUEST_INFO_LIMIT]}
    return result
