"""subresources.kubevirt.io/v1 served by our aggregated API server, reached through the lab's kube-apiserver.

Running VMIs are real: one node agent (a process with its node API) runs them on this host's libvirt, and the
server calls that node API for pause and unpause. Clients: KubeVirt's own virtctl, kubectl, the API directly.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from agent_process import AgentLab
from conftest import wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from virtops.agent.hypervisor import LibvirtHypervisor
from virtops.api import SubresourceServer, register, serving_certificate, unregister
from virtops.api.nodes import NodeApiCredentials
from virtops.kube import ApiError, KubeClient, path_for
from virtops.lab.guest import BOOTED, kernel_boot
from virtops.pki import CertificateAuthority

GV = "/apis/subresources.kubevirt.io/v1"


class Api:
    """The running server, the lab admin client and what the direct (front-proxy) requests need."""

    def __init__(self, server: SubresourceServer, admin: KubeClient, ca_file: str, pki: Path, kubeconfig: str,
                 node: AgentLab):
        self.node = node
        self.ca_pem = Path(ca_file).read_bytes()
        self.server = server
        self.admin = admin
        self.ca_file = ca_file
        self.pki = pki
        self.kubeconfig = kubeconfig

    def as_user(self, user: str, *groups: str) -> KubeClient:
        client = KubeClient.from_kubeconfig(self.kubeconfig)
        client.headers["Impersonate-User"] = user
        if groups:
            client.headers["Impersonate-Group"] = groups[0]
        return client

    def direct(self, method: str, path: str, *, front_proxy: bool = True, headers: dict[str, str] | None = None,
               body: Any = None) -> tuple[int, Any]:
        """A request straight to our server, as kube-apiserver's front proxy (or as a stranger)."""
        pki = self.pki
        pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED", ca_certs=self.ca_file, retries=False,
            cert_file=str(pki / "front-proxy-client.crt") if front_proxy else None,
            key_file=str(pki / "front-proxy-client.key") if front_proxy else None,
        )
        data = json.dumps(body).encode() if body is not None else None
        resp = pool.request(method, f"https://127.0.0.1:{self.server.port}{path}", body=data,
                            headers=headers or {}, timeout=30)
        try:
            return resp.status, json.loads(resp.data) if resp.data else None
        except ValueError:
            return resp.status, resp.data.decode()


@pytest.fixture(scope="module")
def api(lab, kubevirt_api, tmp_path_factory) -> Iterator[Api]:
    yield from serve_api(lab, kubevirt_api, tmp_path_factory)


def serve_api(lab, kubevirt_api, tmp_path_factory) -> Iterator[Api]:
    """Our server registered as the APIService, and one node agent with its node API on this host's libvirt."""
    tmp = tmp_path_factory.mktemp("subresource-api")
    ca = CertificateAuthority("virtops-subresources-ca")
    cert, key = serving_certificate(ca, "virtops-subresources", "kubevirt")
    (tmp / "tls.crt").write_bytes(cert)
    (tmp / "tls.key").write_bytes(key)
    (tmp / "ca.crt").write_bytes(ca.cert_pem)
    admin = KubeClient.from_kubeconfig(lab.kubeconfig)
    node = AgentLab(lab, kubevirt_api, f"subres-{uuid.uuid4().hex[:6]}")
    files = node.plane.node_api_client_files()
    server = SubresourceServer(admin, cert_file=str(tmp / "tls.crt"), key_file=str(tmp / "tls.key"),
                               node_api=NodeApiCredentials(files["cert"], files["key"], files["ca"]))
    server.start()
    try:
        node.start_agent()
        register(admin, port=server.port, ca_pem=ca.cert_pem)
        yield Api(server, admin, str(tmp / "ca.crt"), Path(lab.state_dir) / "pki", lab.kubeconfig, node)
    finally:
        unregister(admin)
        server.stop()
        node.close()


def put(client: KubeClient, namespace: str, resource: str, name: str, sub: str, body: Any = None,
        query: dict | None = None) -> tuple[int, Any]:
    """PUT a subresource through kube-apiserver; (status code, body or Status)."""
    try:
        return 200, client.request("PUT", f"{GV}/namespaces/{namespace}/{resource}/{name}/{sub}", query, body)
    except ApiError as exc:
        return exc.status, exc.body


def make_vmi(api: Api, kubectl, namespace: str, name: str, phase: str | None = "Running") -> None:
    """Running: a real diskless VMI that the module's agent runs. Other phases: an object only (no node)."""
    vmi: dict[str, Any] = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                           "metadata": {"name": name, "namespace": namespace},
                           "spec": {"terminationGracePeriodSeconds": 1,
                                    "domain": {"resources": {"requests": {"memory": "64Mi"}}, "devices": {}}}}
    if phase == "Running":  # the test plays the scheduler
        vmi["metadata"]["labels"] = {"kubevirt.io/nodeName": api.node.node}
        vmi["status"] = {"phase": "Scheduled", "nodeName": api.node.node}
    kubectl("create", "-f", "-", stdin=json.dumps(vmi))
    if phase == "Running":
        wait_until(lambda: (get_vmi(api, namespace, name).get("status") or {}).get("phase") == "Running", 2400, 0.1)
    elif phase:
        # The VMI CRD has no status subresource: a merge patch writes status like our node agent does.
        kubectl("-n", namespace, "patch", "vmi", name, "--type=merge", "-p", json.dumps({"status": {"phase": phase}}))


def get_vmi(api: Api, namespace: str, name: str) -> dict:
    return api.admin.get(path_for("kubevirt.io/v1", "virtualmachineinstances", namespace, name))


def domain_state(namespace: str, name: str) -> str | None:
    """What libvirt says of the VMI's domain: running, paused, ... (None: no domain)."""
    hv = LibvirtHypervisor()
    try:
        state = hv.state(f"{namespace}_{name}")
        return state.libvirt_state if state else None
    finally:
        hv.close()


def paused_condition(api: Api, namespace: str, name: str) -> bool:
    conditions = (get_vmi(api, namespace, name).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Paused" and c["status"] == "True" for c in conditions)


def wait_paused_condition(api: Api, namespace: str, name: str, paused: bool = True) -> None:
    wait_until(lambda: paused_condition(api, namespace, name) == paused, 2400, 0.05)  # a busy machine: long


def conflict_text(name: str, why: str, kind: str = "virtualmachineinstance") -> str:
    return f'Operation cannot be fulfilled on {kind}.kubevirt.io "{name}": {why}'


def test_register_again_changes_nothing(api) -> None:
    before = api.admin.get("/apis/apiregistration.k8s.io/v1/apiservices/v1.subresources.kubevirt.io")
    after = register(api.admin, port=api.server.port, ca_pem=api.ca_pem)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    svc = api.admin.get("/api/v1/namespaces/kubevirt/services/virtops-subresources")
    assert (svc["spec"]["type"], svc["spec"]["externalName"]) == ("ExternalName", "localhost")


def test_discovery_lists_the_subresources(api, kubectl) -> None:
    groups = json.loads(kubectl("get", "--raw", "/apis"))
    assert any(g["name"] == "subresources.kubevirt.io" for g in groups["groups"])
    resources = json.loads(kubectl("get", "--raw", GV))
    assert resources["kind"] == "APIResourceList"
    by_name = {r["name"]: r for r in resources["resources"]}
    assert set(by_name) == {"virtualmachineinstances/pause", "virtualmachineinstances/unpause",
                            "virtualmachines/start", "virtualmachines/stop", "virtualmachines/restart",
                            "virtualmachineinstances/console", "virtualmachineinstances/vnc",
                            "virtualmachineinstances/portforward", "virtualmachines/portforward",
                            "virtualmachineinstances/guestosinfo", "virtualmachineinstances/userlist",
                            "virtualmachineinstances/filesystemlist"}
    gets = ("/console", "/vnc", "/portforward", "/guestosinfo", "/userlist", "/filesystemlist")
    assert all(r["verbs"] == (["get"] if r["name"].endswith(gets) else ["update"])
               and r["namespaced"] for r in by_name.values())
    group = json.loads(kubectl("get", "--raw", "/apis/subresources.kubevirt.io"))
    assert group["preferredVersion"]["groupVersion"] == "subresources.kubevirt.io/v1"
    # The aggregator downloads our OpenAPI in the background and merges it into its own.
    for _attempt in range(60):
        paths = json.loads(kubectl("get", "--raw", "/openapi/v3"))["paths"]
        if "apis/subresources.kubevirt.io/v1" in paths:
            break
        time.sleep(0.5)
    assert "apis/subresources.kubevirt.io/v1" in paths


def test_pause_then_unpause_with_virtctl(api, virtctl, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "testvmi")
    out = virtctl("pause", "vmi", "testvmi", "-n", namespace)
    assert "testvmi was scheduled to pause" in out
    # The 200 came after the agent suspended the domain: nothing to wait for.
    assert domain_state(namespace, "testvmi") == "paused"
    wait_paused_condition(api, namespace, "testvmi")

    again = virtctl.run("pause", "vmi", "testvmi", "-n", namespace, check=False)
    assert again.returncode != 0
    assert conflict_text("testvmi", "VMI is already paused") in again.stderr

    # The same through kubectl, the way a user without virtctl does it.
    kubectl("replace", "--raw", f"{GV}/namespaces/{namespace}/virtualmachineinstances/testvmi/unpause",
            "-f", "-", stdin="{}")
    assert domain_state(namespace, "testvmi") == "running"
    wait_paused_condition(api, namespace, "testvmi", paused=False)

    again = virtctl.run("unpause", "vmi", "testvmi", "-n", namespace, check=False)
    assert again.returncode != 0
    assert conflict_text("testvmi", "VMI is not paused") in again.stderr


def test_the_paused_condition_counts_as_paused_and_no_node_is_an_error(api, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "byagent", phase=None)
    paused = {"type": "Paused", "status": "True", "reason": "PausedByUser", "message": "VMI was paused by user"}
    kubectl("-n", namespace, "patch", "vmi", "byagent", "--type=merge", "-p",
            json.dumps({"status": {"phase": "Running", "conditions": [paused]}}))
    code, status = put(api.admin, namespace, "virtualmachineinstances", "byagent", "pause")
    assert (code, status["message"]) == (409, conflict_text("byagent", "VMI is already paused"))
    # Nothing runs it: KubeVirt's answer when no virt-handler serves the VMI's node, never a silent 200.
    code, status = put(api.admin, namespace, "virtualmachineinstances", "byagent", "unpause")
    assert (code, status["reason"], status["message"]) == (400, "BadRequest", "No virt-handler on node  found")


def test_not_running_and_missing(api, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "scheduled", phase="Scheduled")
    code, status = put(api.admin, namespace, "virtualmachineinstances", "scheduled", "pause")
    assert (code, status["message"]) == (409, conflict_text("scheduled", "VM is not running"))
    code, status = put(api.admin, namespace, "virtualmachineinstances", "scheduled", "unpause")
    assert (code, status["message"]) == (409, conflict_text("scheduled", "VMI is not running"))

    code, status = put(api.admin, namespace, "virtualmachineinstances", "nosuchvmi", "pause")
    assert (code, status["kind"], status["reason"], status["message"]) == (
        404, "Status", "NotFound", 'virtualmachineinstance.kubevirt.io "nosuchvmi" not found')


def test_dry_run_checks_and_changes_nothing(api, virtctl, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "dry")
    assert put(api.admin, namespace, "virtualmachineinstances", "dry", "pause", {"dryRun": ["All"]}) == (200, {})
    assert put(api.admin, namespace, "virtualmachineinstances", "dry", "pause", None, {"dryRun": "All"}) == (200, {})
    assert "dry was scheduled to pause" in virtctl("pause", "vmi", "dry", "-n", namespace, "--dry-run")
    code, _body = put(api.admin, namespace, "virtualmachineinstances", "dry", "unpause", {"dryRun": ["All"]})
    assert code == 409
    code, _body = put(api.admin, namespace, "virtualmachineinstances", "nosuchvmi", "pause", {"dryRun": ["All"]})
    assert code == 404
    assert domain_state(namespace, "dry") == "running"
    assert not paused_condition(api, namespace, "dry")

    virtctl("pause", "vmi", "dry", "-n", namespace)
    wait_paused_condition(api, namespace, "dry")
    code, status = put(api.admin, namespace, "virtualmachineinstances", "dry", "pause", {"dryRun": ["All"]})
    assert (code, status["message"]) == (409, conflict_text("dry", "VMI is already paused"))
    virtctl("unpause", "vmi", "dry", "-n", namespace, "--dry-run")
    assert domain_state(namespace, "dry") == "paused"


def forbidden_text(user: str, namespace: str, name: str, sub: str, resource: str = "virtualmachineinstances") -> str:
    return (f'{resource}.subresources.kubevirt.io "{name}" is forbidden: User "{user}" cannot update resource '
            f'"{resource}/{sub}" in API group "subresources.kubevirt.io" in the namespace "{namespace}"')


def test_user_without_the_verb_is_forbidden(api, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "guarded")
    # Through kube-apiserver, which authorizes aggregated requests itself first.
    code, status = put(api.as_user("bob"), namespace, "virtualmachineinstances", "guarded", "pause")
    assert (code, status["reason"]) == (403, "Forbidden")
    assert status["message"] == forbidden_text("bob", namespace, "guarded", "pause")
    # Straight to our server as the front proxy: our own SubjectAccessReview says the same.
    path = f"{GV}/namespaces/{namespace}/virtualmachineinstances/guarded/pause"
    code, status = api.direct("PUT", path, headers={"X-Remote-User": "bob", "X-Remote-Group": "system:authenticated"})
    assert (code, status["kind"], status["reason"]) == (403, "Status", "Forbidden")
    assert status["message"] == forbidden_text("bob", namespace, "guarded", "pause")
    assert domain_state(namespace, "guarded") == "running"


def test_user_with_the_edit_role_may_pause(api, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "shared")
    kubectl("-n", namespace, "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice")
    alice = api.as_user("alice")
    # kube-controller-manager aggregates kubevirt.io:edit into edit shortly after the roles appear.
    for _attempt in range(60):
        code, status = put(alice, namespace, "virtualmachineinstances", "shared", "pause")
        if code != 403:
            break
        time.sleep(0.5)
    assert (code, status) == (200, {})
    assert domain_state(namespace, "shared") == "paused"
    wait_paused_condition(api, namespace, "shared")
    # Our server saw alice, not the admin: the direct path with her identity is allowed too.
    path = f"{GV}/namespaces/{namespace}/virtualmachineinstances/shared/unpause"
    assert api.direct("PUT", path, headers={"X-Remote-User": "alice"}) == (200, None)


def test_only_the_front_proxy_is_trusted(api) -> None:
    path = f"{GV}/namespaces/default/virtualmachineinstances/x/pause"
    spoofed = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
    code, status = api.direct("PUT", path, front_proxy=False, headers=spoofed)
    assert (code, status["reason"]) == (401, "Unauthorized")
    code, status = api.direct("GET", GV, front_proxy=False)
    assert code == 401
    # The front proxy's certificate without a user header is no user either.
    code, _body = api.direct("GET", GV)
    assert code == 401
    assert api.direct("GET", "/healthz", front_proxy=False) == (200, "ok")


def sign_with_front_proxy_ca(pki: Path, cn: str, out: Path) -> tuple[str, str]:
    """A client certificate from the lab's front-proxy CA (the test may read the lab's files; the server never does)."""
    ca_cert = x509.load_pem_x509_certificate((pki / "front-proxy-ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "front-proxy-ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (out / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / f"{cn}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return str(out / f"{cn}.crt"), str(out / f"{cn}.key")


def test_other_certificates_are_not_the_front_proxy(api, tmp_path) -> None:
    headers = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
    # Signed by the front-proxy CA, but its CN is not in requestheader-allowed-names.
    cert, key = sign_with_front_proxy_ca(api.pki, "intruder", tmp_path)
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=api.ca_file, cert_file=cert, key_file=key,
                               retries=False)
    resp = pool.request("GET", f"https://127.0.0.1:{api.server.port}{GV}", headers=headers, timeout=30)
    assert resp.status == 401
    # Signed by another CA (the cluster CA of the admin's own certificate): refused at the TLS handshake.
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=api.ca_file, retries=False,
                               cert_file=str(api.pki / "admin.crt"), key_file=str(api.pki / "admin.key"))
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", f"https://127.0.0.1:{api.server.port}{GV}", headers=headers, timeout=30)


def test_concurrent_pauses_give_one_success_and_one_conflict(api, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "race")
    results: list[int] = []
    path = f"{GV}/namespaces/{namespace}/virtualmachineinstances/race/pause"
    barrier = threading.Barrier(2)

    def pause() -> None:
        barrier.wait()
        results.append(api.direct("PUT", path, headers={"X-Remote-User": "admin",
                                                        "X-Remote-Group": "system:masters"})[0])

    threads = [threading.Thread(target=pause) for _thread in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [200, 409]


def make_vm(kubectl, namespace: str, name: str, **spec: Any) -> None:
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name, "namespace": namespace},
          "spec": dict(spec, template={"spec": {"domain": {"resources": {"requests": {"memory": "64Mi"}},
                                                           "devices": {}}}})}
    kubectl("create", "-f", "-", stdin=json.dumps(vm))


def vm_spec(api: Api, namespace: str, name: str) -> dict:
    return api.admin.get(path_for("kubevirt.io/v1", "virtualmachines", namespace, name))["spec"]


def test_vm_start_stop_restart(api, kubectl, namespace) -> None:
    vms = "virtualmachines"
    make_vm(kubectl, namespace, "vm1", runStrategy="Halted")
    code, status = put(api.admin, namespace, vms, "vm1", "stop")
    assert (code, status["message"]) == (409, conflict_text("vm1", "VM is not running", "virtualmachine"))
    code, status = put(api.admin, namespace, vms, "vm1", "restart")
    assert (code, status["message"]) == (
        409, conflict_text("vm1", "RunStategy Halted does not support manual restart requests", "virtualmachine"))

    assert put(api.admin, namespace, vms, "vm1", "start", {"dryRun": ["All"]}) == (200, {})
    assert vm_spec(api, namespace, "vm1")["runStrategy"] == "Halted"
    assert put(api.admin, namespace, vms, "vm1", "start") == (200, {})  # KubeClient reports any 2xx as 200
    assert vm_spec(api, namespace, "vm1")["runStrategy"] == "Always"

    make_vmi(api, kubectl, namespace, "vm1")  # what the VM controller would create
    code, status = put(api.admin, namespace, vms, "vm1", "start")
    assert (code, status["message"]) == (409, conflict_text("vm1", "VM is already running", "virtualmachine"))

    uid = get_vmi(api, namespace, "vm1")["metadata"]["uid"]
    assert put(api.admin, namespace, vms, "vm1", "restart") == (200, {})
    # As in KubeVirt: requests for the VM controller (none runs here) to stop this VMI, then start a new one.
    requests = api.admin.get(path_for("kubevirt.io/v1", "virtualmachines", namespace, "vm1"))["status"]
    assert requests == {"stateChangeRequests": [{"action": "Stop", "uid": uid}, {"action": "Start"}]}
    code, status = put(api.admin, namespace, vms, "vm1", "restart")
    assert (code, status["message"]) == (
        500, "Internal error occurred: unable to complete request: stop/start already underway")

    assert put(api.admin, namespace, vms, "vm1", "stop") == (200, {})
    assert vm_spec(api, namespace, "vm1")["runStrategy"] == "Halted"

    code, status = put(api.admin, namespace, vms, "novm", "start")
    assert (code, status["message"]) == (404, 'virtualmachine.kubevirt.io "novm" not found')


def test_vm_with_spec_running(api, kubectl, namespace) -> None:
    make_vm(kubectl, namespace, "legacy", running=False)
    path = f"{GV}/namespaces/{namespace}/virtualmachines/legacy/start"
    code, _body = api.direct("PUT", path, headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"})
    assert code == 202
    assert vm_spec(api, namespace, "legacy")["running"] is True
    code, _body = api.direct("PUT", path.replace("/start", "/stop"),
                             headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"})
    assert code == 202
    assert vm_spec(api, namespace, "legacy")["running"] is False


def test_chunked_body_and_keep_alive(api, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "chunky")
    path = f"{GV}/namespaces/{namespace}/virtualmachineinstances/chunky/pause"
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=api.ca_file, retries=False, maxsize=1,
                               cert_file=str(api.pki / "front-proxy-client.crt"),
                               key_file=str(api.pki / "front-proxy-client.key"))
    url = f"https://127.0.0.1:{api.server.port}{path}"
    headers = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
    resp = pool.request("PUT", url, body=iter([b'{"dryRun": ', b'["All"]}']), headers=headers, chunked=True)
    assert resp.status == 200
    # The same connection still parses the next request correctly after an unauthenticated body.
    assert pool.request("PUT", url, body=b'{"dryRun": ["All"]}').status == 401
    assert pool.request("PUT", url, body=b"{}", headers=headers).status == 200
    assert domain_state(namespace, "chunky") == "paused"


def test_pause_with_the_kubernetes_python_client(api, lab, kubectl, namespace) -> None:
    """What kubernetes.core users would do by hand: the official client's raw call, then KubeVirt's 409."""
    from kubernetes import config as k8s_config

    make_vmi(api, kubectl, namespace, "pyclient")
    api_client = k8s_config.new_client_from_config(config_file=lab.kubeconfig)
    path = f"/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/pyclient/pause"

    def put_pause():
        method, url, headers, body, _post = api_client.param_serialize(
            "PUT", path, header_params={"Content-Type": "application/json"}, body={}, auth_settings=["BearerToken"])
        response = api_client.call_api(method, url, header_params=headers, body=body)
        response.read()
        return response.status, response.data.decode()

    assert put_pause()[0] == 200
    assert domain_state(namespace, "pyclient") == "paused"
    code, text = put_pause()
    assert code == 409
    assert json.loads(text)["message"] == conflict_text("pyclient", "VMI is already paused")


def test_a_user_with_only_patch_on_vmis_cannot_pause(api, kubectl, namespace) -> None:
    """The bypass of issue 15: the old intent annotation paused a VMI for anyone who may patch it."""
    make_vmi(api, kubectl, namespace, "target")
    kubectl("-n", namespace, "create", "role", "vmi-patcher", "--verb=get,patch",
            "--resource=virtualmachineinstances.kubevirt.io")
    kubectl("-n", namespace, "create", "rolebinding", "mallory-patch", "--role=vmi-patcher", "--user=mallory")
    mallory = api.as_user("mallory")
    vmi_path = path_for("kubevirt.io/v1", "virtualmachineinstances", namespace, "target")
    mallory.merge_patch(vmi_path, {"metadata": {"annotations": {"virtops.kubevirt.io/power-state": "paused"}}})
    code, status = put(mallory, namespace, "virtualmachineinstances", "target", "pause")
    assert (code, status["reason"]) == (403, "Forbidden")
    # The agent reconciles every change of its VMIs; the old one suspended the domain within milliseconds of
    # this patch's watch event. Give it ample time to do anything it would do (not a limit on anything).
    time.sleep(2)
    assert domain_state(namespace, "target") == "running"
    assert not paused_condition(api, namespace, "target")


ECHO_PORT = 7  # the busybox guest's echo service (virtops.echo_port), reached through port-forward


def make_guest(api: Api, kubectl, namespace: str, name: str) -> None:
    """The project's busybox guest with a shell on its serial console and a TCP echo service, scheduled to the
    module's agent."""
    vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
           "metadata": {"name": name, "namespace": namespace, "labels": {"kubevirt.io/nodeName": api.node.node}},
           "spec": {"terminationGracePeriodSeconds": 1,
                    "domain": {"resources": {"requests": {"memory": "128Mi"}}, "devices": {},
                               "firmware": kernel_boot(api.node.registry.address,
                                                       f"virtops.no_agent=1 virtops.shell=1 "
                                                       f"virtops.echo_port={ECHO_PORT}")}},
           "status": {"phase": "Scheduled", "nodeName": api.node.node}}
    kubectl("create", "-f", "-", stdin=json.dumps(vmi))
    wait_until(lambda: (get_vmi(api, namespace, name).get("status") or {}).get("phase") == "Running", 2400, 0.1)


@pytest.fixture(scope="module")
def guest(api, kubectl) -> Iterator[tuple[str, str]]:
    """One booted-or-booting busybox guest for the module's console and port-forward tests: (namespace, name)."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    make_guest(api, kubectl, namespace, "talker")
    yield namespace, "talker"
    kubectl("delete", "namespace", namespace, "--wait=false")


def serial_log(api: Api, namespace: str, name: str) -> str:
    path = api.node.state_dir / f"{namespace}_{name}" / "serial.log"
    return path.read_text(errors="replace") if path.exists() else ""


class Console:
    """`virtctl console` as a child process, its output collected by a reader thread."""

    def __init__(self, virtctl, *args: str) -> None:
        self.proc = subprocess.Popen([virtctl.binary, f"--kubeconfig={virtctl.kubeconfig}", "console", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):
            self.out += chunk

    def text(self) -> str:
        return self.out.decode(errors="replace")

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.type("\x1d")  # Ctrl+], virtctl's escape
            except OSError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def test_virtctl_console_shows_the_boot_log_and_a_shell_answers(api, virtctl, guest) -> None:
    namespace, _name = guest
    console = Console(virtctl, "talker", "-n", namespace)  # connected while the guest boots (first user of it)
    try:
        wait_until(lambda: BOOTED in console.text(), 6000, 0.1)  # TCG on a busy machine: minutes
        assert "Successfully connected to talker console" in console.text()
        wait_until(lambda: "a shell on the serial console" in console.text(), 600, 0.1)
        console.type("echo answer-$((6 * 7))\n")
        wait_until(lambda: "answer-42" in console.text(), 600, 0.1)
    except AssertionError:
        print("--- virtctl console output ---\n" + console.text()[-3000:])
        raise
    finally:
        console.close()
    # virtlogd still wrote everything the guest printed to the console log.
    log = serial_log(api, namespace, "talker")
    assert BOOTED in log and "answer-42" in log


def grant_pause_only(kubectl, namespace: str, user: str) -> None:
    """``user`` may read VMIs and pause them in ``namespace``, and nothing else."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pauser", "namespace": namespace},
            "rules": [{"apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachineinstances/pause"],
                       "verbs": ["update"]},
                      {"apiGroups": ["kubevirt.io"], "resources": ["virtualmachineinstances"], "verbs": ["get"]}]}
    kubectl("create", "-f", "-", stdin=json.dumps(role))
    kubectl("-n", namespace, "create", "rolebinding", f"{user}-pause", "--role=pauser", f"--user={user}")


def test_a_user_who_may_pause_but_not_open_the_console_is_refused(api, virtctl, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "guarded")
    grant_pause_only(kubectl, namespace, "carol")
    assert "guarded was scheduled to pause" in virtctl("--as=carol", "pause", "vmi", "guarded", "-n", namespace)
    refused = virtctl.run("--as=carol", "console", "guarded", "-n", namespace, "--timeout=1", check=False)
    assert refused.returncode != 0
    assert "forbidden" in (refused.stdout + refused.stderr).lower()
    # Straight to our server as the front proxy: our own SubjectAccessReview on virtualmachineinstances/console.
    path = f"{GV}/namespaces/{namespace}/virtualmachineinstances/guarded/console"
    code, status = api.direct("GET", path, headers={"X-Remote-User": "carol", "Connection": "Upgrade",
                                                    "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                                    "Sec-WebSocket-Protocol": "plain.kubevirt.io"})
    assert (code, status["reason"]) == (403, "Forbidden")
    assert 'cannot get resource "virtualmachineinstances/console"' in status["message"]


def test_virtctl_vnc_proxy_gives_an_rfb_handshake(api, virtctl, kubectl, namespace) -> None:
    make_vmi(api, kubectl, namespace, "screen")
    proc = subprocess.Popen([virtctl.binary, f"--kubeconfig={virtctl.kubeconfig}", "vnc", "screen", "-n", namespace,
                             "--proxy-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # It prints the port once its websocket to the VMI's VNC is open; it accepts one viewer.
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode() if proc.stderr else ""
        port = json.loads(line)["port"]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            greeting = b""
            while len(greeting) < 12:
                chunk = conn.recv(12 - len(greeting))
                assert chunk, "the VNC stream closed before the RFB greeting"
                greeting += chunk
        assert greeting == b"RFB 003.008\n"
    finally:
        proc.kill()
        proc.wait(10)


class Stdio:
    """`virtctl port-forward --stdio=true`, the ProxyCommand of `virtctl ssh --local-ssh` and of our inventory."""

    def __init__(self, virtctl, target: str, port: int) -> None:
        self.proc = subprocess.Popen([virtctl.binary, f"--kubeconfig={virtctl.kubeconfig}", "port-forward",
                                      "--stdio=true", target, str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def echo(self, line: bytes) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def close(self) -> str:
        """Ends the stream as ssh does (stdin closed); virtctl's stderr."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.stderr.read().decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect_or_none(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=60)
    except ConnectionRefusedError:
        return None


def echo_through(port: int, line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(line)
        got = b""
        while not got.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


def test_virtctl_port_forward_reaches_a_guest_port(api, virtctl, kubectl, guest) -> None:
    """The guest's echo service through qemu's user-mode network: stdio (ssh's ProxyCommand) and a local port."""
    namespace, name = guest
    wait_until(lambda: BOOTED in serial_log(api, namespace, name), 6000, 0.1)  # TCG on a busy machine: minutes
    stdio = Stdio(virtctl, f"vmi/{name}/{namespace}", ECHO_PORT)  # as `virtctl ssh --local-ssh` writes its ProxyCommand
    try:
        assert stdio.echo(b"through-stdio\n") == b"through-stdio\n"
        assert stdio.echo(b"again\n") == b"again\n"
    finally:
        assert stdio.proc.poll() is None, stdio.close()
        stdio.close()
    local = free_port()
    forward = subprocess.Popen([virtctl.binary, f"--kubeconfig={virtctl.kubeconfig}", "port-forward",
                                f"vmi/{name}/{namespace}", f"{local}:{ECHO_PORT}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # virtctl logs "forwarding tcp ..." just before it listens: try until it accepts.
        first = wait_until(lambda: forward.poll() is None and connect_or_none(local), 600, 0.1)
        # Two connections at once: each is its own stream (and its own slirp connection to the guest).
        with first:
            assert echo_through(local, b"second\n") == b"second\n"
            first.sendall(b"first\n")
            assert first.recv(64) == b"first\n"
    finally:
        forward.kill()
        forward.wait(10)
    # Nothing stays listening on the node for the guest: each forward was removed once its connection stood.
    dom = f"{namespace}_{name}"
    usernet = subprocess.run(["virsh", "-c", "qemu:///system", "qemu-monitor-command", "--hmp", dom, "info usernet"],
                             capture_output=True, text=True, check=True).stdout
    assert "HOST_FORWARD" not in usernet


def test_port_forward_refusals(api, virtctl, kubectl, guest) -> None:
    """KubeVirt's answers: a closed guest port, a paused VMI, one without interfaces or not running, no verb."""
    namespace, name = guest
    wait_until(lambda: BOOTED in serial_log(api, namespace, name), 6000, 0.1)
    websocket = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "plain.kubevirt.io"}
    admin = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}

    def forward(target: str, port: int = ECHO_PORT, user: dict[str, str] | None = None):
        """Straight to our server as kube-apiserver's front proxy would send it; (code, Status)."""
        return api.direct("GET", f"{GV}/namespaces/{namespace}/virtualmachineinstances/{target}/portforward/{port}",
                          headers=dict(websocket, **(user or admin)))

    code, status = forward(name, 9)  # nothing listens there
    assert (code, status["message"]) == (500, "Internal error occurred: dialing VM: connect: connection refused")
    stdio = Stdio(virtctl, f"vmi/{name}/{namespace}", 9)
    assert stdio.proc.wait(60) != 0
    assert "dialing VM: connect: connection refused" in stdio.close()

    virtctl("pause", "vmi", name, "-n", namespace)
    try:
        code, status = forward(name)
        assert (code, status["message"]) == (409, conflict_text(name, "VMI is paused"))
    finally:
        virtctl("unpause", "vmi", name, "-n", namespace)

    code, status = forward(name, user={"X-Remote-User": "dave"})  # no role at all
    assert (code, status["reason"]) == (403, "Forbidden")
    assert 'cannot get resource "virtualmachineinstances/portforward"' in status["message"]

    make_vmi(api, kubectl, namespace, "pending", phase="Pending")
    code, status = forward("pending")
    assert (code, status["message"]) == (400, "no network interfaces are present")
    kubectl("-n", namespace, "patch", "vmi", "pending", "--type=merge", "-p",
            json.dumps({"status": {"phase": "Succeeded", "interfaces": [{"name": "default"}]}}))
    code, status = forward("pending")
    assert (code, status["message"]) == (400, "VMI is not running")


def test_virtctl_port_forward_to_a_vm(api, virtctl, kubectl, guest) -> None:
    """virtualmachines/NAME/portforward reaches the VM's own VMI (KubeVirt's FetchVirtualMachineInstanceForVM)."""
    namespace, name = guest
    wait_until(lambda: BOOTED in serial_log(api, namespace, name), 6000, 0.1)
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name, "namespace": namespace},
          "spec": {"runStrategy": "Manual", "template": {"spec": {"domain": {"devices": {}}}}}}
    kubectl("create", "-f", "-", stdin=json.dumps(vm))
    stdio = Stdio(virtctl, f"vm/{name}/{namespace}", ECHO_PORT)
    assert stdio.proc.wait(60) != 0
    assert "VMI is not started" in stdio.close()
    uid = kubectl("-n", namespace, "get", "vm", name, "-o", "jsonpath={.metadata.uid}")
    # What our VM controller writes (the module runs none): the VM created its VMI, which it owns.
    kubectl("-n", namespace, "patch", "vm", name, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"created": True}}))
    kubectl("-n", namespace, "patch", "vmi", name, "--type=merge", "-p", json.dumps({"metadata": {"ownerReferences": [
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name, "uid": uid}]}}))
    stdio = Stdio(virtctl, f"vm/{name}/{namespace}", ECHO_PORT)
    try:
        assert stdio.echo(b"to-the-vm\n") == b"to-the-vm\n"
    finally:
        stdio.close()


def test_virtctl_version_prints_both_versions(api, virtctl) -> None:
    out = virtctl("version")
    assert 'Client Version: version.Info{GitVersion:"v1.7.0", GitCommit:"50b9b4d0' in out
    assert 'Server Version: version.Info{GitVersion:"v0.1.0+virtops"' in out


def test_virtctl_pause_with_the_agent_down_is_an_error(api, virtctl, kubectl, namespace) -> None:
    """Last here (it restarts the module's agent): never a silent 200, and nothing is left recorded."""
    make_vmi(api, kubectl, namespace, "orphan")
    api.node.agents[-1].kill()
    failed = virtctl.run("pause", "vmi", "orphan", "-n", namespace, check=False)
    assert failed.returncode != 0
    assert f"the node agent of {api.node.node} did not answer" in failed.stderr
    assert domain_state(namespace, "orphan") == "running"
    assert not paused_condition(api, namespace, "orphan")
    assert not get_vmi(api, namespace, "orphan")["metadata"].get("annotations")
    api.node.start_agent()
    virtctl("pause", "vmi", "orphan", "-n", namespace)
    assert domain_state(namespace, "orphan") == "paused"
