"""One Debian 12 cloud-image VMI (virtops/debian:12, qemu-guest-agent, sshd, a cloud-init key), reached the way KubeVirt
users reach theirs with KubeVirt's own virtctl: `guestosinfo`, `userlist`, `fslist` (the node API asks the qemu guest
agent), `port-forward` and `ssh` to its sshd. The guest boots under TCG in minutes, so the module boots it once and
every test shares it; run it under `flock /tmp/virtops-heavy.lock`."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from test_subresource_api import GV, Api, Stdio, grant_pause_only, make_vmi, serve_api
from virtops.lab import ControlPlane

pytest.importorskip("libvirt")

HOSTNAME = "guest-access"


@pytest.fixture(scope="module")
def api(lab, kubevirt_api, tmp_path_factory) -> Iterator[Api]:
    """This module's own subresource API server and node (test_subresource_api's)."""
    yield from serve_api(lab, kubevirt_api, tmp_path_factory)


def ssh_key(tmp: Path) -> tuple[Path, str]:
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "virtops-test", "-f", str(key)], check=True)
    return key, (tmp / "id_ed25519.pub").read_text().strip()


@pytest.fixture(scope="module")
def debian(api, lab, kubectl, virtctl, tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    """(namespace, name, private key) of a running Debian VMI whose guest agent is connected."""
    image = ControlPlane(lab.name, lab.state_dir).push_debian()
    key, public = ssh_key(tmp_path_factory.mktemp("ssh"))
    namespace, name = f"deb-{uuid.uuid4().hex[:6]}", "debian"
    kubectl("create", "namespace", namespace)
    user_data = "#cloud-config\n" + json.dumps({"hostname": HOSTNAME, "ssh_authorized_keys": [public]})
    kubectl("create", "-f", "-", stdin=json.dumps({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubevirt.io/nodeName": api.node.node}},
        "spec": {"terminationGracePeriodSeconds": 5,
                 "domain": {"resources": {"requests": {"memory": "512Mi"}},
                            "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}},
                                                  {"name": "seed", "disk": {"bus": "virtio"}}]}},
                 "volumes": [{"name": "root", "containerDisk": {"image": image}},
                             {"name": "seed", "cloudInitNoCloud": {"userData": user_data}}]},
        "status": {"phase": "Scheduled", "nodeName": api.node.node}}))  # the test plays the scheduler

    def agent_connected() -> bool:
        vmi = json.loads(kubectl("-n", namespace, "get", "vmi", name, "-o", "json"))
        return any(c["type"] == "AgentConnected" and c["status"] == "True"
                   for c in (vmi.get("status") or {}).get("conditions") or [])

    try:
        wait_until(agent_connected, 4000, 0.2)  # TCG on a shared machine: a minute or several
    except AssertionError:
        vmi = kubectl("-n", namespace, "get", "vmi", name, "-o", "json")
        log = (api.node.state_dir / f"{namespace}_{name}" / "serial.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"the Debian guest's agent never connected: {vmi}\n{log}") from None
    # The guest agent comes before sshd (cloud-init runs between them): wait until sshd greets.
    wait_until(lambda: sshd_banner(virtctl, namespace, name).startswith(b"SSH-2.0-"), 600, 0.5)
    try:
        yield namespace, name, key
    finally:
        kubectl("delete", "vmi", name, "-n", namespace, "--wait=true", "--timeout=120s")
        kubectl("delete", "namespace", namespace, "--wait=false")


def virtctl_json(virtctl, *args: str) -> dict:
    out = virtctl(*args)
    print(f"virtctl {' '.join(args)}:\n{out}")
    return json.loads(out)


def ssh_args(key: Path) -> list[str]:
    return ["-i", str(key), "-t", "-o StrictHostKeyChecking=no", "-t", "-o UserKnownHostsFile=/dev/null",
            "-t", "-o ConnectTimeout=120"]


def ssh_env(virtctl) -> dict[str, str]:
    """virtctl ssh runs ssh with the ProxyCommand `virtctl port-forward --stdio=true vmi/NAME/NS 22` and passes no
    --kubeconfig to it: that one finds the lab through KUBECONFIG, as a user's would."""
    return dict(os.environ, KUBECONFIG=virtctl.kubeconfig)


def virtctl_ssh(virtctl, key: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([virtctl.binary, f"--kubeconfig={virtctl.kubeconfig}", "ssh", *ssh_args(key), *args],
                          env=ssh_env(virtctl), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_virtctl_guestosinfo_prints_debians_data(debian, virtctl) -> None:
    namespace, name, _key = debian
    info = virtctl_json(virtctl, "guestosinfo", name, "-n", namespace)
    assert info["os"]["id"] == "debian" and info["os"]["versionId"] == "12"
    assert info["os"]["prettyName"] == "Debian GNU/Linux 12 (bookworm)"
    assert info["guestAgentVersion"] and {"name": "guest-get-users", "enabled": True} in info["supportedCommands"]
    assert "/" in [fs["mountPoint"] for fs in info["fsInfo"]["disks"]]
    assert info["timezone"].endswith(", 0")


def test_virtctl_fslist_shows_the_root_file_system(debian, virtctl) -> None:
    namespace, name, _key = debian
    listed = virtctl_json(virtctl, "fslist", name, "-n", namespace)
    root = next(fs for fs in listed["items"] if fs["mountPoint"] == "/")
    assert root["fileSystemType"] == "ext4" and 0 < root["usedBytes"] < root["totalBytes"]
    assert root["disk"][0]["busType"] == "virtio"


def sshd_banner(virtctl, namespace: str, name: str) -> bytes:
    """The first line sshd sends through `virtctl port-forward --stdio=true` (b"" when the dial is refused)."""
    stdio = Stdio(virtctl, f"vmi/{name}/{namespace}", 22)  # the ProxyCommand virtctl ssh writes
    try:
        return stdio.echo(b"SSH-2.0-virtops-test\r\n")
    finally:
        stdio.close()


def test_virtctl_port_forward_reaches_sshd(debian, virtctl) -> None:
    namespace, name, _key = debian
    banner = sshd_banner(virtctl, namespace, name)
    print(f"sshd through virtctl port-forward --stdio: {banner!r}")
    assert banner.startswith(b"SSH-2.0-OpenSSH_") and b"Debian" in banner


def test_virtctl_ssh_with_the_cloud_init_key_and_userlist_shows_the_session(debian, virtctl) -> None:
    namespace, name, key = debian
    target = f"debian@vmi/{name}/{namespace}"
    out = virtctl_ssh(virtctl, key, target, "-c", "cat /etc/os-release; hostname").stdout
    print(f"virtctl ssh -c 'cat /etc/os-release; hostname':\n{out}")
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in out and out.strip().endswith(HOSTNAME)

    # A login with a terminal is in utmp, which guest-get-users reads: the user list shows it while it lasts.
    session = subprocess.Popen([virtctl.binary, f"--kubeconfig={virtctl.kubeconfig}", "ssh", *ssh_args(key),
                                "-t", "-tt", target, "-c", "echo logged-in; sleep 600"], env=ssh_env(virtctl),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert session.stdout is not None and b"logged-in" in session.stdout.readline()

        def users() -> list[dict]:
            return virtctl_json(virtctl, "userlist", name, "-n", namespace)["items"]

        seen = wait_until(lambda: [u for u in users() if u["userName"] == "debian"], 100, 0.5)
        assert seen[0]["loginTime"] > 0
    finally:
        session.kill()
        session.wait(10)


def test_no_guest_agent_is_kubevirts_error(api, kubectl, virtctl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "silent")  # diskless: it never runs a guest agent
    failed = virtctl.run("guestosinfo", "silent", "-n", namespace, check=False)
    print(f"virtctl guestosinfo without a guest agent: {failed.stderr.strip()}")
    assert failed.returncode != 0
    assert "virtualmachineinstance.kubevirt.io" in failed.stderr
    assert "VMI does not have guest agent connected" in failed.stderr


def test_a_user_who_may_pause_but_not_read_guest_info_is_refused(api, kubectl, virtctl, namespace) -> None:
    grant_pause_only(kubectl, namespace, "dave")
    make_vmi(api, kubectl, namespace, "guarded")
    assert "guarded was scheduled to pause" in virtctl("--as=dave", "pause", "vmi", "guarded", "-n", namespace)
    for sub, resource in (("guestosinfo", "guestosinfo"), ("userlist", "userlist"), ("fslist", "filesystemlist")):
        refused = virtctl.run("--as=dave", sub, "guarded", "-n", namespace, check=False)
        print(f"virtctl --as=dave {sub}: {refused.stderr.strip().splitlines()[-1]}")
        assert refused.returncode != 0 and "Error " in refused.stderr
        # kube-apiserver's words (virtctl prints only "unknown" for them).
        path = f"{GV}/namespaces/{namespace}/virtualmachineinstances/guarded/{resource}"
        raw = kubectl.run("--as=dave", "get", "--raw", path, check=False)
        assert raw.returncode != 0 and "Forbidden" in raw.stderr, raw.stderr
        assert f'cannot get resource "virtualmachineinstances/{resource}"' in raw.stderr
        # Straight to our server as the front proxy: our own SubjectAccessReview on that verb.
        code, body = api.direct("GET", path, headers={"X-Remote-User": "dave"})
        assert (code, body["reason"]) == (403, "Forbidden")
        assert f'cannot get resource "virtualmachineinstances/{resource}"' in body["message"]
