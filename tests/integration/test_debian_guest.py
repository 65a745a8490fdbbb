"""The Debian 12 cloud image (docs/guest-image.md) as KubeVirt users run it: KubeVirt's own example manifests
(examples/kubevirt/, only the image changed, and the memory where 128Mi is too little) and cloud-init from
Secrets with SSH keys, on a stack lab (our controller and one real node agent, the lab's registry).

Six Debian guests boot at once in one lab, created in one go at the start of the module: under TCG each boot
costs a core for 1–2 minutes, and the tests then only read what the guests did. What a guest did is read from
inside it through its qemu guest agent (tests/integration/guest_agent.py), and from its console log.
Times (create → Running, → AgentConnected, → login prompt, → cloud-init done) are measured by a poller and
printed at the end (run with -s), never asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import CRDS, ROOT, USER_ROLES, Kubectl, wait_until

pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from guest_agent import GuestAgent  # noqa: E402
from virtops.lab.debian_image import LOGIN_PROMPT  # noqa: E402

EXAMPLES = ROOT / "examples" / "kubevirt"
DEFAULTS_POLICY = ROOT / "roles" / "cluster" / "files" / "admission" / "vmi-defaults.yaml"
KUBEVIRT_EXAMPLES = ("vmi-ephemeral", "vmi-sata", "vmi-nocloud", "vmi-masquerade")
# What cloud-init's final stage prints on the console when it is done (its final_message module).
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at ")
USER = "ada"


def wait_boot(predicate, seconds: float = 900.0):
    """Six TCG boots share two cores with other work: a generous bounded wait (a count of tries). Every 2 s:
    each look costs a kubectl process or a guest agent command, and the guests need the CPU more."""
    return wait_until(predicate, attempts=int(seconds / 2), delay=2.0)


def secret_vmi(name: str, kind: str, hostname: str) -> dict:
    """User data from a Secret (the API's ``secretRef``, Go's userDataSecretRef) and an SSH key from
    ``accessCredentials`` propagated the same way, as KubeVirt's user guide writes them."""
    method = {"cloudInitNoCloud": "noCloud", "cloudInitConfigDrive": "configDrive"}[kind]
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": name},
        "spec": {
            "hostname": hostname,
            "terminationGracePeriodSeconds": 0,
            "domain": {"memory": {"guest": "512Mi"}, "devices": {"disks": [
                {"name": "containerdisk", "disk": {"bus": "virtio"}},
                {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}]}},
            "accessCredentials": [{"sshPublicKey": {"source": {"secret": {"secretName": f"{name}-key"}},
                                                    "propagationMethod": {method: {}}}}],
            "volumes": [{"name": "containerdisk", "containerDisk": {"image": "{{ lab_registry }}/virtops/debian:12"}},
                        {"name": "cloudinitdisk", kind: {"secretRef": {"name": f"{name}-userdata"}}}]}}


class Timeline:
    """Polls the VMIs in the background (one kubectl every 2 s) and notes when each reached what (seconds since
    its create): Running, AgentConnected, and on its console the login prompt and cloud-init's final line."""

    def __init__(self, kubectl: Kubectl, namespace: str, agent_dir: Path, created: dict[str, float]) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.agent_dir = agent_dir
        self.created = created
        self.marks: dict[str, dict[str, float]] = {name: {} for name in created}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="debian-timeline", daemon=True)
        self._thread.start()

    def _note(self, name: str, what: str) -> None:
        self.marks[name].setdefault(what, time.monotonic() - self.created[name])

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self._look()
            except Exception as exc:  # noqa: BLE001 - a failed look is only a gap in the times, never a failure
                print(f"timeline: {exc}")

    def _look(self) -> None:
        proc = self.kubectl.run("-n", self.namespace, "get", "vmis", "-o", "json", check=False)
        for vmi in json.loads(proc.stdout)["items"] if proc.returncode == 0 else []:
            name = vmi["metadata"]["name"]
            if name not in self.marks:
                continue
            status = vmi.get("status") or {}
            if status.get("phase") == "Running":
                self._note(name, "running")
            if condition(vmi, "AgentConnected").get("status") == "True":
                self._note(name, "agent")
            text = console(self.agent_dir, self.namespace, name)
            if LOGIN_PROMPT in text:
                self._note(name, "login")
            if CLOUD_INIT_FINISHED.search(text):
                self._note(name, "cloud-init")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def table(self) -> str:
        lines = [f"{'VMI':18} {'Running':>8} {'Agent':>8} {'login:':>8} {'cloud-init':>10}   (s after create)"]
        for name, marks in self.marks.items():
            cells = [f"{marks[k]:.1f}" if k in marks else "-" for k in ("running", "agent", "login", "cloud-init")]
            lines.append(f"{name:18} {cells[0]:>8} {cells[1]:>8} {cells[2]:>8} {cells[3]:>10}")
        return "\n".join(lines)


def domain(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def console(agent_dir: Path, namespace: str, name: str) -> str:
    """The guest's serial console as the agent logs it (docs/guest-image.md)."""
    try:
        return (agent_dir / domain(namespace, name) / "serial.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="module")
def debian(tmp_path_factory):
    """A stack lab with the Debian image in its registry, KubeVirt's defaulting policy, and six Debian VMIs
    created at once: (kubectl, namespace, agent state dir, Timeline, SSH public key)."""
    from virtops.lab import ControlPlane

    name = f"debian-{os.getpid()}"
    plane = ControlPlane(name, stack=True, nodes=1, debian_image=True)
    info = plane.up()
    timeline: Timeline | None = None
    try:
        kubectl = Kubectl(Path(info.state_dir) / "bin" / "kubectl", info.kubeconfig)
        kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES), "-f", str(DEFAULTS_POLICY))
        kubectl("wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io", "--timeout=60s")
        namespace = f"d-{os.urandom(3).hex()}"
        kubectl("create", "namespace", namespace)
        wait_for_defaulting(kubectl, namespace)

        key_file = tmp_path_factory.mktemp("ssh") / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ada@virtops-test", "-f",
                        str(key_file)], check=True)
        public_key = key_file.with_suffix(".pub").read_text().strip()
        user_data = (f"#cloud-config\nusers:\n- default\n- name: {USER}\n  shell: /bin/bash\n"
                     f"  sudo: ALL=(ALL) NOPASSWD:ALL\n")
        bodies = [yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text()) for example in KUBEVIRT_EXAMPLES]
        bodies += [secret_vmi("secret-nocloud", "cloudInitNoCloud", "from-nocloud"),
                   secret_vmi("secret-configdrive", "cloudInitConfigDrive", "from-configdrive")]
        for vmi_name in ("secret-nocloud", "secret-configdrive"):
            kubectl("-n", namespace, "create", "secret", "generic", f"{vmi_name}-userdata",
                    f"--from-literal=userdata={user_data}")
            kubectl("-n", namespace, "create", "secret", "generic", f"{vmi_name}-key",
                    f"--from-literal=key1={public_key}")
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": bodies})
        text = text.replace("{{ lab_registry }}", info.registry)
        started = time.monotonic()
        kubectl("-n", namespace, "create", "-f", "-", stdin=text)
        created = {b["metadata"]["name"]: started for b in bodies}
        agent_dir = Path(info.state_dir) / "agents" / f"{name}-node-1"
        timeline = Timeline(kubectl, namespace, agent_dir, created)
        yield kubectl, namespace, agent_dir, timeline, public_key
    finally:
        if timeline is not None:
            timeline.stop()
            print("\nDebian guests under TCG, six at once:\n" + timeline.table())
        plane.down()


def wait_for_defaulting(kubectl: Kubectl, namespace: str) -> None:
    """KubeVirt's disk defaults (vmi-sata has a volume and no disk) take effect once kube-apiserver serves the CRD
    and has loaded the policy: probe with a VMI that is never scheduled (it asks for more memory than the node has)."""
    probe = json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                        "metadata": {"name": "defaulting-probe"},
                        "spec": {"domain": {"memory": {"guest": "1Ti"}, "devices": {}},
                                 "volumes": [{"name": "v", "emptyDisk": {"capacity": "1Mi"}}]}})

    def defaulted() -> bool:
        kubectl("-n", namespace, "delete", "vmi", "defaulting-probe", "--ignore-not-found", "--wait=false")
        if kubectl.run("-n", namespace, "create", "-f", "-", stdin=probe, check=False).returncode != 0:
            return False  # the CRD is Established but not served yet
        stored = json.loads(kubectl("-n", namespace, "get", "vmi", "defaulting-probe", "-o", "json"))
        return bool(stored["spec"]["domain"]["devices"].get("disks"))

    wait_until(defaulted, attempts=300, delay=0.1)
    kubectl("-n", namespace, "delete", "vmi", "defaulting-probe", "--wait=false")


def get_vmi(kubectl: Kubectl, namespace: str, name: str) -> dict:
    return json.loads(kubectl("-n", namespace, "get", "vmi", name, "-o", "json"))


def condition(vmi: dict, kind: str) -> dict:
    return next((c for c in (vmi.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def wait_reported(kubectl: Kubectl, namespace: str, name: str) -> dict:
    """The VMI once its guest agent is connected and has reported an address and the OS."""
    def reported():
        vmi = get_vmi(kubectl, namespace, name)
        status = vmi.get("status") or {}
        assert status.get("phase") in (None, "", "Pending", "Scheduling", "Scheduled", "Running"), status
        interfaces = status.get("interfaces") or []
        return (condition(vmi, "AgentConnected").get("status") == "True" and interfaces
                and interfaces[0].get("ipAddress") and status.get("guestOSInfo") and vmi)

    return wait_boot(reported)


def wait_cloud_init(agent_dir: Path, namespace: str, name: str) -> dict:
    """cloud-init's status once its final stage said so on the console, read from inside the guest."""
    wait_boot(lambda: CLOUD_INIT_FINISHED.search(console(agent_dir, namespace, name)))
    return GuestAgent(domain(namespace, name)).cloud_init_status()


@pytest.mark.parametrize("name, root_disk", [("vmi-ephemeral", "/dev/vda2"), ("vmi-sata", "/dev/sda2")])
def test_kubevirt_example_boots_debian_to_a_login_prompt_and_its_agent_reports_address_and_os(
        debian, name, root_disk):
    kubectl, namespace, agent_dir, _timeline, _key = debian
    vmi = wait_reported(kubectl, namespace, name)

    assert vmi["status"]["phase"] == "Running"
    assert vmi["status"]["interfaces"][0]["ipAddress"] == "10.0.2.15"  # qemu's user-mode network
    assert vmi["status"]["interfaces"][0]["infoSource"] == "domain, guest-agent"
    os_info = vmi["status"]["guestOSInfo"]
    assert (os_info["id"], os_info["versionId"], os_info["machine"]) == ("debian", "12", "x86_64")
    assert os_info["prettyName"] == "Debian GNU/Linux 12 (bookworm)" and os_info["kernelRelease"].endswith("-amd64")
    wait_boot(lambda: LOGIN_PROMPT in console(agent_dir, namespace, name))
    # The disk is the bus the manifest asked for, or KubeVirt's default (sata) where it names none.
    assert GuestAgent(domain(namespace, name)).output("/usr/bin/findmnt", "-no", "SOURCE", "/").strip() == root_disk
    if name == "vmi-sata":
        assert vmi["spec"]["domain"]["devices"]["disks"] == [{"name": "containerdisk", "disk": {"bus": "sata"}}]


def test_kubevirt_vmi_nocloud_runs_its_user_data_script(debian):
    kubectl, namespace, agent_dir, _timeline, _key = debian
    result = wait_cloud_init(agent_dir, namespace, "vmi-nocloud")
    assert (result["status"], result["datasource"], result["errors"]) == ("done", "nocloud", [])
    agent = GuestAgent(domain(namespace, "vmi-nocloud"))
    assert "printed from cloud-init userdata" in agent.read_file("/var/log/cloud-init-output.log")
    # The manifest's emptyDisk (2Gi) is the third virtio disk.
    assert agent.output("/usr/bin/lsblk", "-bdno", "SIZE", "/dev/vdc").strip() == str(2 * 2**30)
    assert agent.output("/bin/hostname").strip() == "vmi-nocloud"  # meta-data's local-hostname: the VMI's name
    assert get_vmi(kubectl, namespace, "vmi-nocloud")["status"]["phase"] == "Running"


def test_kubevirt_vmi_masquerade_runs_its_cloud_config(debian):
    kubectl, namespace, agent_dir, _timeline, _key = debian
    result = wait_cloud_init(agent_dir, namespace, "vmi-masquerade")
    agent = GuestAgent(domain(namespace, "vmi-masquerade"))
    assert (result["status"], result["datasource"], result["errors"]) == ("done", "nocloud", []), \
        agent.read_file("/var/log/cloud-init-output.log")[-3000:]
    # password: fedora, for the image's default user (debian), not expired.
    shadow = agent.output("/usr/bin/getent", "shadow", "debian").split(":")
    assert shadow[1].startswith("$") and shadow[2] != "0"
    # packages: [nginx] and runcmd: systemctl enable --now nginx.
    assert agent.run("/usr/bin/systemctl", "is-active", "--quiet", "nginx").exitcode == 0
    # networkData: written for eth0 as given. (Debian names its NIC enp1s0, so the fallback DHCP config
    # gives the address: docs/guest-image.md.)
    network = agent.read_file("/etc/systemd/network/10-cloud-init-eth0.network")
    assert "fd10:0:2::2/120" in network
    assert get_vmi(kubectl, namespace, "vmi-masquerade")["status"]["phase"] == "Running"


@pytest.mark.parametrize("name, hostname, datasource", [
    ("secret-nocloud", "from-nocloud", "nocloud"),
    ("secret-configdrive", "from-configdrive", "configdrive"),
])
def test_user_data_secret_and_ssh_key_reach_the_guest(debian, name, hostname, datasource):
    _kubectl, namespace, agent_dir, _timeline, public_key = debian
    result = wait_cloud_init(agent_dir, namespace, name)
    assert (result["status"], result["datasource"], result["errors"]) == ("done", datasource, [])
    agent = GuestAgent(domain(namespace, name))
    assert agent.output("/bin/hostname").strip() == hostname  # spec.hostname, through the meta-data
    assert agent.output("/usr/bin/getent", "passwd", USER).split(":")[6].strip() == "/bin/bash"  # the Secret's user
    # accessCredentials' key is in the meta-data's public keys: cloud-init gives them to the default user.
    assert public_key in agent.read_file("/home/debian/.ssh/authorized_keys").splitlines()
