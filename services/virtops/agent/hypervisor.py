"""The narrow hypervisor interface of the agent; the only module that imports libvirt."""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

from virtops.agent import guestinfo
from virtops.agent.domain import GUEST_AGENT_CHANNEL, METADATA_NS

RUNNING, SUCCEEDED, FAILED = "Running", "Succeeded", "Failed"
# How long one guest agent command may take; a busy or booting guest just answers on a later resync.
AGENT_TIMEOUT_SECONDS = 2
# How long a guest's answer is reused once it reported an IPv4 address (addresses rarely change).
AGENT_CACHE_SECONDS = 15.0
# How long the guest's OS as its agent reported it is reused: it changes only when the guest reboots into
# another kernel or is upgraded (KubeVirt's virt-launcher asks for it every few minutes, too).
OS_INFO_CACHE_SECONDS = 300.0
# KubeVirt's VirtualMachineInstanceGuestOSInfo field for each of libvirt's guest info "os.*" keys (the qemu
# guest agent's guest-get-osinfo answer).
_OS_INFO_FIELDS = {
    "os.name": "name", "os.id": "id", "os.pretty-name": "prettyName", "os.version": "version",
    "os.version-id": "versionId", "os.kernel-release": "kernelRelease", "os.kernel-version": "kernelVersion",
    "os.machine": "machine",
}
# How long a port-forward waits for the guest to accept the connection qemu makes to it.
GUEST_DIAL_SECONDS = 30.0


class GuestDialError(Exception):
    """A TCP connection to a guest port could not be made (the text says why, as a dial error would)."""


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised and handled instead."""


libvirt.registerErrorHandler(_quiet, None)

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


@dataclass(frozen=True)
class DomainState:
    """A domain's state in VMI terms: phase Running/Succeeded/Failed, or None for defined-but-never-started."""

    phase: str | None
    paused: bool
    libvirt_state: str
    reason: int


_GONE = DomainState(phase=None, paused=False, libvirt_state="gone", reason=0)


@dataclass(frozen=True)
class GuestInterface:
    """One interface as the guest agent reports it: what the guest itself has configured."""

    name: str
    mac: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


@dataclass(frozen=True)
class DomainMarker:
    """What the agent wrote into <metadata>: which VMI (and node) the domain belongs to."""

    namespace: str
    name: str
    uid: str
    node: str


class LibvirtHypervisor:
    def __init__(self, uri: str = "qemu:///system", poll_seconds: float = 0.1) -> None:
        self.uri = uri
        self.poll_seconds = poll_seconds
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        # Guest agent answers per domain run (name, libvirt id): (monotonic time, answer).
        self._agent_cache: dict[tuple[str, int], tuple[float, Any]] = {}
        self._os_cache: dict[tuple[str, int], tuple[float, Any]] = {}
        self._dial_locks: dict[str, threading.Lock] = {}

    # --- connection ---------------------------------------------------------
    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                self._conn = libvirt.open(self.uri)
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self._connection().lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    # --- queries ------------------------------------------------------------
    def state(self, name: str) -> DomainState | None:
        dom = self._lookup(name)
        if dom is None:
            return None
        try:
            state, reason = dom.state()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        phase: str | None
        if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PMSUSPENDED,
                     libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_SHUTDOWN):
            phase = RUNNING  # SHUTDOWN means "shutting down": still running until it is off
        elif state == libvirt.VIR_DOMAIN_CRASHED:
            phase = FAILED
        elif state == libvirt.VIR_DOMAIN_SHUTOFF:
            if reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN:
                phase = SUCCEEDED
            elif reason in (libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN, libvirt.VIR_DOMAIN_SHUTOFF_SAVED):
                phase = None  # defined, not started (or saved): nothing ran to an end
            else:
                phase = FAILED  # crashed, destroyed behind our back, failed to start
        else:
            phase = None
        return DomainState(phase=phase, paused=state == libvirt.VIR_DOMAIN_PAUSED,
                           libvirt_state=_STATE_NAMES.get(state, str(state)), reason=reason)

    def stream_socket(self, name: str, kind: str) -> str | None:
        """The unix socket of a running domain's serial console (``console``) or VNC server (``vnc``), from its
        live XML; None when it has none (gone, off, or defined before the agent gave domains these sockets)."""
        dom = self._lookup(name)
        if dom is None:
            return None
        try:
            if not dom.isActive():
                return None
            root = ET.fromstring(dom.XMLDesc(0))
        except libvirt.libvirtError:
            return None
        if kind == "console":
            source = root.find("./devices/serial[@type='unix']/source")
            return source.get("path") if source is not None else None
        listen = root.find("./devices/graphics[@type='vnc']/listen[@type='socket']")
        return listen.get("socket") if listen is not None else None

    def dial_guest(self, name: str, port: int, guest_address: str | None = None) -> socket.socket:
        """A TCP connection to ``port`` of the guest behind the domain's first user-mode interface.

        qemu's user-mode network (slirp) is the only way in. The agent adds a host forward for this one
        connection (HMP ``hostfwd_add`` on the interface's netdev, host side 127.0.0.1 port 0, so the kernel
        picks a free port and qemu's ``info usernet`` tells which), connects to it, waits until slirp has
        accepted the connection and the guest answered the SYN (the slirp socket is ESTABLISHED; refused or
        gone is a GuestDialError, like a failed dial), and removes the forward again: the connection stays, and
        no listener is left for anyone else. One dial per domain at a time, so the new forward is known.
        """
        dom = self._lookup(name)
        if dom is None or not dom.isActive():
            raise GuestDialError("the domain is not running")
        root = ET.fromstring(dom.XMLDesc(0))
        alias = root.find("./devices/interface[@type='user']/alias")
        if alias is None or not alias.get("name"):
            raise GuestDialError("the VMI has no user-mode network interface")
        netdev = "host" + alias.get("name", "")  # libvirt names an interface's netdev "host" + its alias
        guest = ""
        if guest_address:
            try:
                guest = str(ipaddress.IPv4Address(guest_address))
            except ValueError:
                guest = ""  # IPv6 or nonsense: slirp's own guest address (the first DHCP lease)
        with self._dial_lock(name):
            before = _host_forwards(_hmp(dom, "info usernet"), netdev)
            answer = _hmp(dom, f"hostfwd_add {netdev} tcp:127.0.0.1:0-{guest}:{port}")
            if answer:
                raise GuestDialError(answer)
            added = sorted(set(_host_forwards(_hmp(dom, "info usernet"), netdev)) - set(before))
            if len(added) != 1:
                raise GuestDialError("qemu did not report the new host forward")
            host_port = added[0]
            sock: socket.socket | None = None
            try:
                sock = socket.create_connection(("127.0.0.1", host_port), timeout=GUEST_DIAL_SECONDS)
                self._wait_established(dom, netdev, host_port, sock)
                sock.settimeout(None)
                return sock
            except (OSError, GuestDialError) as exc:
                if sock is not None:
                    sock.close()
                raise exc if isinstance(exc, GuestDialError) else GuestDialError(str(exc)) from exc
            finally:
                _hmp(dom, f"hostfwd_remove {netdev} tcp:127.0.0.1:{host_port}")

    def _wait_established(self, dom: libvirt.virDomain, netdev: str, host_port: int, sock: socket.socket) -> None:
        deadline = time.monotonic() + GUEST_DIAL_SECONDS
        while True:
            if _connection_states(_hmp(dom, "info usernet"), netdev, host_port) & _CONNECTED:
                return  # the guest answered the SYN (and may have spoken, or closed, since)
            readable, _w, _x = select.select([sock], [], [], 0)
            if readable:
                if sock.recv(1, socket.MSG_PEEK):
                    return
                # slirp closed our side before the guest ever answered: the guest reset it.
                raise GuestDialError("connect: connection refused")
            if time.monotonic() > deadline:
                raise GuestDialError("the guest did not accept the connection in time")
            time.sleep(0.01)

    def _dial_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._dial_locks.setdefault(name, threading.Lock())

    def list_names(self, prefix: str = "") -> list[str]:
        return sorted(d.name() for d in self._connection().listAllDomains() if d.name().startswith(prefix))

    def marker(self, name: str) -> DomainMarker | None:
        """The agent's metadata element, or None for domains the agent did not define."""
        dom = self._lookup(name)
        if dom is None:
            return None
        try:
            raw = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        except libvirt.libvirtError:
            return None
        el = ET.fromstring(raw)
        return DomainMarker(namespace=el.get("namespace", ""), name=el.get("name", ""), uid=el.get("uid", ""),
                            node=el.get("node", ""))

    def macs(self, name: str) -> list[str]:
        """MAC addresses of the domain's interfaces, in device order (libvirt fills in generated ones)."""
        dom = self._lookup(name)
        if dom is None:
            return []
        root = ET.fromstring(dom.XMLDesc(0))
        return [m.get("address", "") for m in root.findall("./devices/interface/mac")]

    def guest_agent_connected(self, name: str) -> bool:
        """Whether a guest agent holds the org.qemu.guest_agent.0 channel open (libvirt tracks the port's state)."""
        dom = self._lookup(name)
        if dom is None:
            return False
        try:
            root = ET.fromstring(dom.XMLDesc(0))
        except libvirt.libvirtError:
            return False
        return any(t.get("name") == GUEST_AGENT_CHANNEL and t.get("state") == "connected"
                   for t in root.findall("./devices/channel/target"))

    def _asked_or_cached(self, name: str, cache: dict[tuple[str, int], tuple[float, Any]], max_age: float,
                         ask: Callable[[libvirt.virDomain], Any]) -> tuple[tuple[str, int], Any, bool] | None:
        """A question to a running domain's guest agent (``ask``), or its answer from ``cache`` while younger
        than ``max_age``: (the cache key, the answer, whether it came from the cache). None when the domain is
        gone or not running (a frozen guest cannot answer); libvirtError when the agent does not answer.
        Answers are cached per domain run (name and libvirt id), by the caller."""
        dom = self._lookup(name)
        if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            return None
        key = (name, dom.ID())
        cached = cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return key, cached[1], True
        dom.agentSetResponseTimeout(AGENT_TIMEOUT_SECONDS)
        return key, ask(dom), False

    @staticmethod
    def _remember(cache: dict[tuple[str, int], tuple[float, Any]], key: tuple[str, int], answer: Any) -> None:
        for old in [k for k in cache if k[0] == key[0]]:  # an earlier run of the same domain
            del cache[old]
        cache[key] = (time.monotonic(), answer)

    def guest_interfaces(self, name: str) -> list[GuestInterface] | None:
        """The guest's interfaces and addresses from its guest agent (org.qemu.guest_agent.0).

        None when there is no answer: no agent in the guest (yet), the domain is not running, the
        guest is too busy. Only what the guest reports is returned; nothing is guessed from DHCP.
        """
        try:
            asked = self._asked_or_cached(
                name, self._agent_cache, AGENT_CACHE_SECONDS,
                lambda dom: dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT))
        except libvirt.libvirtError:
            return None
        if asked is None:
            return None
        key, raw, cached = asked
        if cached:
            return raw
        result = []
        for ifname, info in sorted((raw or {}).items()):
            addrs = info.get("addrs") or []
            result.append(GuestInterface(
                name=ifname, mac=(info.get("hwaddr") or "").lower(),
                ipv4=tuple(a["addr"] for a in addrs if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4),
                ipv6=tuple(a["addr"] for a in addrs if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV6)))
        if any(i.ipv4 for i in result if i.name != "lo"):
            self._remember(self._agent_cache, key, result)
        return result

    def guest_os_info(self, name: str) -> dict[str, str] | None:
        """The guest's OS as KubeVirt's ``status.guestOSInfo`` (VirtualMachineInstanceGuestOSInfo) shows it.

        From the guest agent's guest-get-osinfo (libvirt's guest info, ``VIR_DOMAIN_GUEST_INFO_OS``): ``name``,
        ``id``, ``prettyName``, ``version``, ``versionId``, ``kernelRelease``, ``kernelVersion``, ``machine``,
        each only when the guest reported it. ``{}`` when the guest's agent has no such command (the busybox
        guest); None when there is no answer (no agent yet, not running, too busy): ask again later.
        """
        try:
            asked = self._asked_or_cached(name, self._os_cache, OS_INFO_CACHE_SECONDS, _guest_os)
        except libvirt.libvirtError:
            return None
        if asked is None:
            return None
        key, info, cached = asked
        if not cached:
            self._remember(self._os_cache, key, info)
        return dict(info)

    def guest_users(self, name: str) -> list[dict[str, Any]] | None:
        """The guest's logged-in users (the userlist subresource): libvirt's typed guest info, as KubeVirt reads
        them. Asked live; None when the domain is not running or its guest agent does not answer."""
        return self._ask_live(name, lambda dom: guestinfo.users(_typed_guest_info(dom, _USERS)))

    def guest_filesystems(self, name: str) -> list[dict[str, Any]] | None:
        """The guest's mounted file systems (the filesystemlist subresource), from guest-get-fsinfo as KubeVirt
        asks it (libvirt's typed file system info has no bus type). None as for guest_users."""
        return self._ask_live(name, lambda dom: guestinfo.filesystems(_agent_command(dom, "guest-get-fsinfo")))

    def guest_agent_info(self, name: str) -> dict[str, Any] | None:
        """Everything the guestosinfo subresource shows (VirtualMachineInstanceGuestAgentInfo): guest-info, the
        hostname, timezone and users, guest_os_info's OS and the file systems. None as for guest_users."""
        def ask(dom: libvirt.virDomain) -> dict[str, Any]:
            system = _typed_guest_info(dom, _USERS | _HOSTNAME | _TIMEZONE)
            return guestinfo.guest_agent_info(_agent_command(dom, "guest-info") or {}, system,
                                              self.guest_os_info(name) or {},
                                              _agent_command(dom, "guest-get-fsinfo") or [])
        return self._ask_live(name, ask)

    def _ask_live(self, name: str, ask: Callable[[libvirt.virDomain], Any]) -> Any:
        dom = self._lookup(name)
        try:
            if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                return None
            dom.agentSetResponseTimeout(AGENT_TIMEOUT_SECONDS)
            return ask(dom)
        except (libvirt.libvirtError, ValueError):
            return None

    # --- actions ------------------------------------------------------------
    def ensure_running(self, name: str, xml: str) -> bool:
        """Define (if missing) and start (if not active). True when something changed."""
        dom = self._lookup(name)
        changed = False
        if dom is None:
            dom = self._connection().defineXML(xml)
            changed = True
        if not dom.isActive():
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # already running (a race)
                    raise
            changed = True
        return changed

    def pause(self, name: str) -> bool:
        """Suspend a RUNNING domain; anything else is left alone. True when it was suspended."""
        dom = self._lookup(name)
        if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            return False
        dom.suspend()
        return True

    def resume(self, name: str) -> bool:
        """Resume a PAUSED domain; anything else is left alone. True when it was resumed."""
        dom = self._lookup(name)
        if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            return False
        dom.resume()
        return True

    def shutdown(self, name: str) -> bool:
        """Press the ACPI power button once and return at once. True while the domain is still running.

        A paused domain is resumed first: a frozen guest cannot see the button. Whether and when the guest
        powers off is the guest's business; the caller keeps the deadline (the agent requeues the VMI at it
        and destroys then).
        """
        dom = self._lookup(name)
        if dom is None:
            return False
        try:
            if not dom.isActive():
                return False
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            try:
                # The power button, as KubeVirt presses it; not the guest agent (libvirt's default when one
                # is connected), whose guest-shutdown a guest may not implement.
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            except libvirt.libvirtError:
                pass  # no ACPI (or already going down): the deadline decides
            return bool(dom.isActive())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            return False

    def destroy(self, name: str) -> bool:
        """Pull the plug (if running), keep the definition: the agent releases the VMI, then undefines
        (``stop``). True when a domain existed."""
        dom = self._lookup(name)
        if dom is None:
            return False
        try:
            self._destroy(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            return False
        return True

    @staticmethod
    def _destroy(dom: libvirt.virDomain) -> None:
        """destroy without asking isActive first (one call less on every delete): a domain that is not
        running answers destroy with an error, and only then is it asked."""
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN or dom.isActive():
                raise

    def stop(self, name: str, grace_seconds: float = 0.0) -> bool:
        """Destroy (if running) and undefine. True when a domain existed.

        With ``grace_seconds`` it first presses the power button and waits for the guest, blocking the
        caller that long: for tools and tests only. The agent never waits here (``shutdown`` plus a requeue).
        """
        if grace_seconds > 0 and self.shutdown(name):
            deadline = time.monotonic() + grace_seconds
            while time.monotonic() < deadline and (self.state(name) or _GONE).phase == RUNNING:
                time.sleep(self.poll_seconds)
        dom = self._lookup(name)
        if dom is None:
            return False
        try:
            self._destroy(dom)
            self._agent_cache = {k: v for k, v in self._agent_cache.items() if k[0] != name}
            self._os_cache = {k: v for k, v in self._os_cache.items() if k[0] != name}
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        return True


# slirp's TCP states once the guest has answered the SYN of the connection qemu made to it.
_CONNECTED = {"ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT"}


def _guest_os(dom: libvirt.virDomain) -> dict[str, str]:
    try:
        raw = dom.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_OS, 0)
    except libvirt.libvirtError as exc:
        if not _agent_lacks_command(exc):
            raise
        raw = {}  # an answer: this agent does not know guest-get-osinfo
    return {field: str(raw[key]) for key, field in _OS_INFO_FIELDS.items() if raw.get(key)}


_USERS = libvirt.VIR_DOMAIN_GUEST_INFO_USERS
_HOSTNAME = libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
_TIMEZONE = libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE


def _typed_guest_info(dom: libvirt.virDomain, types: int) -> dict[str, Any]:
    """libvirt's guest info of ``types`` (flat keys: ``user.0.name``, ``hostname``, ``timezone.name``); {} from an
    agent without the commands behind them."""
    try:
        return dict(dom.guestInfo(types, 0) or {})
    except libvirt.libvirtError as exc:
        if not _agent_lacks_command(exc):
            raise
        return {}


def _agent_command(dom: libvirt.virDomain, command: str) -> Any:
    """One guest agent command (libvirt-qemu passes it through); its ``return``, None when the agent lacks it."""
    try:
        answer = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": command}), AGENT_TIMEOUT_SECONDS, 0)
    except libvirt.libvirtError as exc:
        if not _agent_lacks_command(exc):
            raise
        return None
    return json.loads(answer or "{}").get("return")


def _agent_lacks_command(exc: libvirt.libvirtError) -> bool:
    """The guest agent answered, with "no such command" (qemu-ga's CommandNotFound) or "disabled" (its
    --block-rpcs): libvirt 9.0 reports either as an internal error carrying the agent's text."""
    message = exc.get_error_message() or ""
    return exc.get_error_code() == libvirt.VIR_ERR_INTERNAL_ERROR and (
        "has not been found" in message or "has been disabled" in message)


def _hmp(dom: libvirt.virDomain, command: str) -> str:
    """One human-monitor command through libvirt (qemu has no QMP command for host forwards); its output."""
    try:
        out = libvirt_qemu.qemuMonitorCommand(dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    except libvirt.libvirtError as exc:
        raise GuestDialError(exc.get_error_message()) from exc
    return (out or "").strip()


def _usernet_rows(text: str, netdev: str) -> list[list[str]]:
    """The socket rows of one netdev in ``info usernet``: [Protocol[State], FD, src addr, src port, dst addr, ...]."""
    rows: list[list[str]] = []
    mine = False
    for line in text.splitlines():
        if line.startswith("Hub"):
            mine = line.rstrip().endswith(f"({netdev}):")
        elif mine and line.strip() and not line.lstrip().startswith("Protocol"):
            rows.append(line.split())
    return rows


def _host_forwards(text: str, netdev: str) -> list[int]:
    return [int(r[3]) for r in _usernet_rows(text, netdev)
            if len(r) > 3 and r[0] == "TCP[HOST_FORWARD]" and r[3].isdigit()]


def _connection_states(text: str, netdev: str, host_port: int) -> set[str]:
    """States of slirp's connections made through the host forward on ``host_port`` (SYN_SENT, ESTABLISHED)."""
    return {r[0][4:-1] for r in _usernet_rows(text, netdev)
            if len(r) > 3 and r[0].startswith("TCP[") and r[0] != "TCP[HOST_FORWARD]" and r[3] == str(host_port)}
