"""containerDisks from the lab's real OCI registry (docs/images.md): pulled once per node, waited for while
missing, failed when they are no disk, never left half-made; a big pull does not hold up other VMIs.

The agent is a real process on a node of its own; the registry is the session lab's (Debian's
docker-registry), and a second one that wants credentials for the pull-secret scenario.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import wait_until

pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from agent_process import AgentLab, wait_long  # noqa: E402
from virtops.kube import path_for  # noqa: E402
from virtops.lab import registry as lab_registry  # noqa: E402
from virtops.lab.control_plane import _start_ticks, free_port  # noqa: E402

ONE_GIB = 2**30


@pytest.fixture
def node(lab, kubevirt_api, namespace):
    agent_lab = AgentLab(lab, kubevirt_api, namespace)
    yield agent_lab
    agent_lab.close()


def blank_qcow2(directory: Path, name: str = "disk.qcow2", size: str = "16M") -> Path:
    path = directory / name
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def disk_vmi(node: AgentLab, name: str, image: str, **container_disk) -> dict:
    """A VMI whose one disk is the containerDisk ``image`` (it boots to the BIOS's "no bootable disk")."""
    body = node.vmi_body(name)
    body["spec"]["domain"]["devices"] = {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}
    body["spec"]["volumes"] = [{"name": "root", "containerDisk": {"image": image, **container_disk}}]
    return body


def create(node: AgentLab, *bodies: dict) -> None:
    node.kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(bodies)}))


def ready(node: AgentLab, name: str) -> dict:
    return node.condition(name, "Ready") or {}


def event_messages(node: AgentLab, name: str) -> list[tuple[str, str]]:
    items, _rv = node.admin.list(path_for("v1", "events", node.namespace),
                                 {"fieldSelector": f"involvedObject.name={name}"})
    return [(e["reason"], e["message"]) for e in sorted(items, key=lambda e: e["metadata"]["resourceVersion"])]


def cache_entries(node: AgentLab) -> list[Path]:
    base = node.state_dir / "images" / "sha256"
    return sorted(p for p in base.iterdir() if (p / "meta.json").exists()) if base.is_dir() else []


def test_two_vmis_from_one_image_pull_it_once_and_each_gets_its_own_overlay(node, tmp_path):
    image = node.registry.ensure_container_disk(f"{node.namespace}/tiny", "1", blank_qcow2(tmp_path))
    node.start_agent()
    create(node, disk_vmi(node, "first", image))
    wait_long(lambda: node.phase("first") == "Running")
    create(node, disk_vmi(node, "second", image))
    wait_long(lambda: node.phase("second") == "Running")

    entries = cache_entries(node)
    assert len(entries) == 1, entries  # one copy on the node
    disk = entries[0] / "rootfs" / "disk" / "disk.qcow2"
    for name in ("first", "second"):
        overlay = node.state_dir / node.domain(name) / "disk-root.qcow2"
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                                         check=True, capture_output=True, text=True).stdout)
        assert info["backing-filename"] == str(disk) and info["format"] == "qcow2"
    first, second = event_messages(node, "first"), event_messages(node, "second")
    assert ("Pulling", f'Pulling image "{image}"') in first
    assert any(r == "Pulled" and m.startswith(f'Successfully pulled image "{image}"') for r, m in first)
    # IfNotPresent (a tag that is not latest): the second VMI does not even ask the registry.
    assert not any(r == "Pulling" for r, _m in second), second


def test_vmi_waits_for_a_missing_image_and_starts_by_itself_once_it_is_pushed(node, tmp_path):
    image = node.registry.reference(f"{node.namespace}/late", "1")
    node.start_agent()
    create(node, disk_vmi(node, "patient", image))
    uid = node.vmi("patient")["metadata"]["uid"]
    wait_long(lambda: ready(node, "patient").get("reason") == "ImagePullBackOff")
    condition = ready(node, "patient")
    assert condition["status"] == "False"
    assert f'Back-off pulling image "{image}"' in condition["message"] and "manifest unknown" in condition["message"]
    # Events are written off the agent's path (virtops.kube.events): the condition may come first.
    wait_until(lambda: any(r == "Failed" and image in m and "manifest unknown" in m
                           for r, m in event_messages(node, "patient")), attempts=100, delay=0.1)
    assert node.phase("patient") == "Scheduled" and node.libvirt_state("patient") is None  # nothing half-made

    node.registry.ensure_container_disk(f"{node.namespace}/late", "1", blank_qcow2(tmp_path))
    wait_long(lambda: node.phase("patient") == "Running")
    assert node.vmi("patient")["metadata"]["uid"] == uid  # the same VMI, started by the agent's retry
    assert ready(node, "patient")["status"] == "True"


def test_unreachable_registry_waits_and_an_image_without_a_disk_fails_naming_the_field(node, tmp_path):
    unreachable = f"127.0.0.1:{free_port()}/nobody/home:1"
    (tmp_path / "readme").write_text("not a disk\n")
    no_disk = node.registry.ensure_files(f"{node.namespace}/nodisk", "1", {"/readme": tmp_path / "readme"},
                                         key=f"{node.namespace}-nodisk")
    node.start_agent()
    create(node, disk_vmi(node, "lost", unreachable), disk_vmi(node, "hollow", no_disk))

    wait_long(lambda: ready(node, "lost").get("reason") == "ImagePullBackOff")
    assert "connection refused" in ready(node, "lost")["message"] and unreachable in ready(node, "lost")["message"]
    wait_long(lambda: node.phase("hollow") == "Failed")
    synced = node.condition("hollow", "Synchronized")
    assert synced["message"].startswith(f"spec.volumes[0].containerDisk.image: image '{no_disk}': the image is "
                                        "not a containerDisk: /disk/ holds no file")
    for name in ("lost", "hollow"):
        assert node.libvirt_state(name) is None
        assert not (node.state_dir / node.domain(name) / "disk-root.qcow2").exists()


@pytest.fixture
def private_registry(lab, tmp_path):
    """A second registry of the lab that wants a user and password for every request (htpasswd, bcrypt)."""
    password = base64.b32encode(os.urandom(10)).decode().lower()
    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-bBc", str(htpasswd), "puller", password], check=True, capture_output=True)
    port = free_port()
    name = f"registry-{os.urandom(3).hex()}"
    argv = lab_registry.prepare(Path(lab.state_dir), port, name=name, htpasswd=htpasswd)
    log = open(tmp_path / "registry.log", "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        ca_dir = lab_registry.registry_dir(Path(lab.state_dir), name) / "certs"
        lab_registry.wait_ready(f"127.0.0.1:{port}", ca_dir / "ca.crt", lambda: proc.poll() is None)
        auth = tmp_path / "push-auth.json"
        auth.write_text(json.dumps(dockerconfig(f"127.0.0.1:{port}", "puller", password)))
        yield lab_registry.Registry(f"127.0.0.1:{port}", ca_dir, auth), password
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        shutil.rmtree(lab_registry.registry_dir(Path(lab.state_dir), name), ignore_errors=True)


def dockerconfig(registry: str, user: str, password: str) -> dict:
    return {"auths": {registry: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}


def pull_secret(node: AgentLab, name: str, config: dict) -> None:
    node.admin.create(path_for("v1", "secrets", node.namespace), {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": node.namespace},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}})


def node_may_read(node: AgentLab, *secrets: str) -> None:
    """The node rule for Secrets (design.md, "Secrets on nodes") as RBAC resourceNames: this node's agent may
    get exactly these Secrets of the test's namespace. (Here the test grants it; in a cluster the controller
    maintains it for the Secrets that VMIs on the node reference.)"""
    rbac = "rbac.authorization.k8s.io/v1"
    name = f"virtops-node-{node.node}-secrets"
    node.admin.create(path_for(rbac, "roles", node.namespace), {
        "apiVersion": rbac, "kind": "Role", "metadata": {"name": name, "namespace": node.namespace},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": list(secrets)}]})
    node.admin.create(path_for(rbac, "rolebindings", node.namespace), {
        "apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": name, "namespace": node.namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": f"system:virtops:node:{node.node}"}]})


def test_pull_secret_is_used_from_the_vmis_namespace_and_never_logged(node, private_registry, tmp_path):
    registry, password = private_registry
    image = registry.ensure_container_disk(f"{node.namespace}/private", "1", blank_qcow2(tmp_path))
    pull_secret(node, "right", dockerconfig(registry.address, "puller", password))
    wrong_password = password[::-1]
    pull_secret(node, "wrong", dockerconfig(registry.address, "puller", wrong_password))
    node_may_read(node, "right", "wrong")
    node.start_agent(f"--registry-ca-dir={registry.ca_dir}")
    create(node, disk_vmi(node, "denied", image, imagePullSecret="wrong"),
           disk_vmi(node, "anonymous", image),
           disk_vmi(node, "allowed", image, imagePullSecret="right"))

    wait_long(lambda: node.phase("allowed") == "Running")
    for name in ("denied", "anonymous"):
        wait_long(lambda name=name: ready(node, name).get("reason") == "ImagePullBackOff")
        message = ready(node, name)["message"]
        assert image in message and ("unauthorized" in message or "authentication required" in message), message
        assert node.libvirt_state(name) is None
    # The credentials reach skopeo only through a private file that is gone after the pull.
    assert not list((node.state_dir / "pull-auth").iterdir())
    logs = "".join(agent.log() for agent in node.agents)
    everything = logs + json.dumps(node.admin.list(path_for("v1", "events", node.namespace))[0])
    for secret_text in (password, wrong_password, base64.b64encode(f"puller:{password}".encode()).decode()):
        assert secret_text not in everything
        assert secret_text not in node.conn.lookupByName(node.domain("allowed")).XMLDesc()


def big_image(registry: lab_registry.Registry, repository: str) -> str:
    """A 1 GiB raw containerDisk of zeros: a sparse file, so building it costs no disk and its layer
    compresses to about a megabyte; packaged once per machine (cached by its key)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        disk = Path(tmp) / "big.raw"
        with open(disk, "wb") as f:
            f.truncate(ONE_GIB)
        return registry.ensure_container_disk(repository, "1", disk, key="zeros-1GiB-raw")


def test_a_1gib_image_pulling_does_not_delay_another_vmis_start(node):
    big = big_image(node.registry, f"{node.namespace}/big")
    # One reconcile worker: were pulls done on it, the diskless VMI could not start before the pull ended.
    node.start_agent("--workers=1")
    create(node, disk_vmi(node, "big", big))
    wait_until(lambda: ("Pulling", f'Pulling image "{big}"') in event_messages(node, "big"), attempts=600, delay=0.1)
    create(node, node.vmi_body("small"))
    wait_long(lambda: node.phase("small") == "Running")
    pulled_already = [m for r, m in event_messages(node, "big") if r == "Pulled"]
    wait_long(lambda: node.phase("big") == "Running", attempts=1200)
    assert not pulled_already, "the 1 GiB pull ended before the small VMI started: the test proves nothing"
    started = {name: next(e for e in node.admin.list(path_for("v1", "events", node.namespace),
                                                     {"fieldSelector": f"involvedObject.name={name}"})[0]
                          if e["reason"] == reason)
               for name, reason in (("small", "Started"), ("big", "Pulled"))}
    assert int(started["small"]["metadata"]["resourceVersion"]) < int(started["big"]["metadata"]["resourceVersion"])
    assert len(cache_entries(node)) == 1


def test_lab_registry_serves_the_guest_and_runs_like_etcd(lab):
    info = json.loads((Path(lab.state_dir) / "state.json").read_text())
    assert info["registry"] == f"127.0.0.1:{info['ports']['registry']}"
    entry = info["pids"]["registry"]
    assert _start_ticks(entry["pid"]) == entry["ticks"]
    listening = Path(f"/proc/{entry['pid']}/net/tcp").read_text()
    assert f"0100007F:{info['ports']['registry']:04X}" in listening  # 127.0.0.1 only
    registry = lab_registry.Registry.of_lab(lab.state_dir)
    assert registry.has(f"{registry.address}/virtops/busybox-guest:1")
    assert not registry.has(f"{registry.address}/virtops/busybox-guest:nope")
