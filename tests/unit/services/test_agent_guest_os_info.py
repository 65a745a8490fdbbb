"""KubeVirt's status.guestOSInfo from the guest agent's guest-get-osinfo (libvirt's guest info, OS part): the
field names of VirtualMachineInstanceGuestOSInfo, one question per domain run, kept while the agent is silent.
A fake domain at the libvirt boundary; the real Debian guest answers in tests/integration/test_debian_guest.py."""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from virtops.agent.agent import NODE_LABEL, NodeAgent, now_rfc3339  # noqa: E402
from virtops.agent.domain import status_interfaces  # noqa: E402
from virtops.agent.hypervisor import LibvirtHypervisor  # noqa: E402

# What libvirt 9.0 makes of Debian 12's qemu-ga answer to guest-get-osinfo.
DEBIAN = {"os.id": "debian", "os.name": "Debian GNU/Linux", "os.pretty-name": "Debian GNU/Linux 12 (bookworm)",
          "os.version": "12 (bookworm)", "os.version-id": "12", "os.kernel-release": "6.1.0-41-amd64",
          "os.kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)", "os.machine": "x86_64"}
KUBEVIRT_FIELDS = {"id": "debian", "name": "Debian GNU/Linux", "prettyName": "Debian GNU/Linux 12 (bookworm)",
                   "version": "12 (bookworm)", "versionId": "12", "kernelRelease": "6.1.0-41-amd64",
                   "kernelVersion": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)", "machine": "x86_64"}


def agent_error(message: str, code: int = libvirt.VIR_ERR_INTERNAL_ERROR) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, 0, message, 0, "", "", "", 0, 0)
    return exc


class GuestDomain:
    """A running domain whose guest agent answers guestInfo with ``answer`` (a dict, or an error to raise)."""

    def __init__(self, answer, state: int = libvirt.VIR_DOMAIN_RUNNING) -> None:
        self.answer = answer
        self._state = state
        self.asked = 0

    def state(self) -> list[int]:
        return [self._state, 0]

    def ID(self) -> int:  # noqa: N802 - libvirt's name
        return 3

    def agentSetResponseTimeout(self, seconds: int) -> int:  # noqa: N802 - libvirt's name
        return 0

    def guestInfo(self, types: int, flags: int) -> dict:  # noqa: N802 - libvirt's name
        assert types == libvirt.VIR_DOMAIN_GUEST_INFO_OS  # only the OS: users, file systems, disks cost more
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def hypervisor(monkeypatch, dom: GuestDomain) -> LibvirtHypervisor:
    hv = LibvirtHypervisor()
    monkeypatch.setattr(hv, "_lookup", lambda name: dom)
    return hv


def test_the_guest_os_has_kubevirts_field_names_and_is_asked_once_per_domain_run(monkeypatch):
    dom = GuestDomain(DEBIAN)
    hv = hypervisor(monkeypatch, dom)
    assert hv.guest_os_info("ns_vm") == KUBEVIRT_FIELDS
    assert hv.guest_os_info("ns_vm") == KUBEVIRT_FIELDS and dom.asked == 1


def test_an_agent_without_guest_get_osinfo_answers_empty_and_is_not_asked_again(monkeypatch):
    dom = GuestDomain(agent_error("internal error: unable to execute QEMU agent command 'guest-get-osinfo': "
                                  "The command guest-get-osinfo has not been found"))
    hv = hypervisor(monkeypatch, dom)
    assert hv.guest_os_info("ns_vm") == {}
    assert hv.guest_os_info("ns_vm") == {} and dom.asked == 1


def test_no_answer_is_none_and_asked_again_and_a_paused_guest_is_not_asked(monkeypatch):
    dom = GuestDomain(agent_error("Guest agent is not responding: QEMU guest agent is not connected",
                                  libvirt.VIR_ERR_AGENT_UNRESPONSIVE))
    hv = hypervisor(monkeypatch, dom)
    assert hv.guest_os_info("ns_vm") is None
    assert hv.guest_os_info("ns_vm") is None and dom.asked == 2
    paused = GuestDomain(DEBIAN, state=libvirt.VIR_DOMAIN_PAUSED)
    assert hypervisor(monkeypatch, paused).guest_os_info("ns_vm") is None and paused.asked == 0


MAC = "52:54:00:00:00:01"


class ConnectedGuest:
    """The agent's hypervisor boundary: a running domain whose guest agent is connected."""

    def __init__(self, os_info) -> None:
        self.os_info = os_info

    def macs(self, name):
        return [MAC]

    def guest_agent_connected(self, name):
        return True

    def guest_interfaces(self, name):
        return None

    def guest_os_info(self, name):
        return self.os_info


class RecordingApi:
    def __init__(self) -> None:
        self.status: dict = {}

    def json_patch(self, path, ops):
        for op in ops[1:]:
            self.status[op["path"].rsplit("/", 1)[1]] = op["value"]
        return {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "2", "labels": {NODE_LABEL: "x"}},
                "status": self.status}


def running_vmi(**status) -> dict:
    return {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "1"}, "spec": {},
            "status": {"phase": "Running", "nodeName": "node-a",
                       "interfaces": status_interfaces(["default"], [MAC], None, []),
                       "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": now_rfc3339()}],
                       **status}}


@pytest.mark.parametrize("answer, written", [
    (KUBEVIRT_FIELDS, KUBEVIRT_FIELDS),  # the guest told its OS
    (None, {"id": "debian"}),  # no answer this time: what it told before stays
    ({}, None),  # an agent that cannot tell: nothing is written
])
def test_the_agent_writes_guest_os_info_as_the_guest_agent_told_it(tmp_path, answer, written):
    api = RecordingApi()
    node = NodeAgent(api, "node-a", ConnectedGuest(answer), state_dir=tmp_path,  # type: ignore[arg-type]
                     image_cache=tmp_path, domain_type="qemu")
    try:
        before = {"guestOSInfo": {"id": "debian"}} if answer is None else {}
        node._write_running(running_vmi(**before), "ns_a", paused=False)
        assert api.status.get("guestOSInfo") == written
        assert [c["type"] for c in api.status["conditions"]] == ["Ready", "AgentConnected"]
    finally:
        node.queue.close()  # a booting guest's look-again timer then adds to a closed queue
