"""Domain lifecycle events from libvirtd, on a connection of their own that comes back when libvirtd does.

libvirt delivers events only through an event loop: ``virEventRegisterDefaultImpl`` once per process,
before the connections that want events are opened, and a thread that runs ``virEventRunDefaultImpl``
for ever. With that loop running every connection of the process also gets keepalive probes, so a
libvirtd that went away is noticed by all of them (``isAlive()`` turns false and
``LibvirtHypervisor`` opens a new one on its next call).

The agent is told two things: "domain NAME changed" (started, suspended, resumed, stopped, crashed,
undefined..., or its guest agent connected or disconnected: KubeVirt's AgentConnected condition, and the
moment to ask the guest for its address and OS) and "(re)connected" (events may have been missed while
libvirtd was away: look at everything again). The agent's periodic resync stays as the safety net.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import libvirt

import virtops.agent.hypervisor  # noqa: F401 # pylint: disable=unused-import # installs the quiet libvirt error handler

log = logging.getLogger("virtops.agent.libvirt")

EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed", libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

# libvirt's VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE: the guest agent opened or closed its channel.
AGENT_EVENT_NAMES = {
    libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED: "agent-connected",
    libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED: "agent-disconnected",
}

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:  # pragma: no cover - the default loop does not fail in practice
            log.warning("libvirt event loop: %s", exc)
            threading.Event().wait(0.1)


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process)."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        _loop_thread = threading.Thread(target=_run_event_loop, name="libvirt-event-loop", daemon=True)
        _loop_thread.start()


OnDomain = Callable[[str, str], None]
OnConnect = Callable[[], None]


class DomainEventWatcher:
    """Subscribes to every domain's lifecycle events on ``uri`` and re-subscribes after libvirtd restarts."""

    def __init__(self, uri: str = "qemu:///system", *, keepalive_interval: int = 2, keepalive_count: int = 3,
                 max_backoff_seconds: float = 5.0) -> None:
        self.uri = uri
        # A dead libvirtd is noticed after interval * (count + 1) seconds without an answer at worst;
        # a clean restart closes the socket and is noticed at once.
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.max_backoff_seconds = max_backoff_seconds
        self.connections = 0  # how many times a subscription was made (1 + reconnects)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_domain: OnDomain = lambda _name, _event: None
        self._on_connect: OnConnect = lambda: None
        self._on_error: Callable[[], None] = lambda: None

    def start(self, on_domain: OnDomain, on_connect: OnConnect, on_error: Callable[[], None] | None = None) -> None:
        self._on_domain = on_domain
        self._on_connect = on_connect
        self._on_error = on_error or (lambda: None)
        ensure_event_loop()
        self._thread = threading.Thread(target=self._run, name="libvirt-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _lifecycle(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, _detail: int,
                   _opaque: object) -> None:
        # Runs on the event loop thread: hand the name over and return (dom.name() is local, no RPC).
        try:
            self._on_domain(dom.name(), EVENT_NAMES.get(event, str(event)))
        except Exception:  # noqa: BLE001 - an exception here would be lost inside libvirt
            log.exception("handling a libvirt event failed")

    def _agent_lifecycle(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, state: int, _reason: int,
                         _opaque: object) -> None:
        try:
            self._on_domain(dom.name(), AGENT_EVENT_NAMES.get(state, f"agent-{state}"))
        except Exception:  # noqa: BLE001 - an exception here would be lost inside libvirt
            log.exception("handling a libvirt guest agent event failed")

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            conn: libvirt.virConnect | None = None
            callback_ids: list[int] = []
            closed = threading.Event()
            try:
                conn = libvirt.open(self.uri)
                conn.setKeepAlive(self.keepalive_interval, self.keepalive_count)
                conn.registerCloseCallback(lambda _c, _reason, event: event.set(), closed)
                for event_id, callback in ((libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
                                           (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._agent_lifecycle)):
                    callback_ids.append(conn.domainEventRegisterAny(None, event_id, callback, None))
                self.connections += 1
                if self.connections > 1:
                    log.info("reconnected to %s; looking at every domain again", self.uri)
                backoff = 0.2
                self._on_connect()  # whatever happened while we were away, the agent looks again
                while not self._stop.is_set() and not closed.wait(0.5):
                    if not conn.isAlive():
                        break
                if not self._stop.is_set():
                    log.warning("connection to libvirtd (%s) lost; reconnecting", self.uri)
                    self._on_error()
            except Exception as exc:  # noqa: BLE001 - libvirtd away, or a callback failed: this thread must go on
                log.warning("cannot subscribe to libvirt events on %s: %s", self.uri, exc)
                self._on_error()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
            finally:
                if conn is not None:
                    self._close(conn, callback_ids)

    @staticmethod
    def _close(conn: libvirt.virConnect, callback_ids: list[int]) -> None:
        try:
            if conn.isAlive():
                for callback_id in callback_ids:
                    conn.domainEventDeregisterAny(callback_id)
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
