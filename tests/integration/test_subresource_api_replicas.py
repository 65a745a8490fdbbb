"""Two controller replicas behind one APIService on the real lab, the way a cluster with several kube-apiservers runs
them: one replica on every API server host, all serving subresources.kubevirt.io on the same loopback port with the
same CA, so each API server's ExternalName `localhost` reaches the replica on its own host. The lab has one host, so
the replicas share the port with SO_REUSEPORT (the kernel hands each connection to a listener that is open). The
elected leader alone reconciles and writes the APIService.

KubeVirt's virtctl pauses and unpauses a real VMI (the module's node agent runs it on this host's libvirt) through
either replica while the other one is stopped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from agent_process import AgentLab
from conftest import wait_until
from virtops.api import serving_certificate, unregister
from virtops.api.apiservice import APISERVICE_PATH
from virtops.kube import KubeClient, NotFoundError, path_for
from virtops.lab.control_plane import free_port
from virtops.pki import CertificateAuthority

# Short terms, so that the survivor takes over within seconds of the leader's stop.
LEADER_ELECTION = ["--leader-elect-lease-duration=4", "--leader-elect-renew-deadline=3",
                   "--leader-elect-retry-period=0.5"]


class Replica:
    """One ``virtops-controller`` process, as the cluster role runs it on a control-plane host."""

    def __init__(self, identity: str, argv: list[str], log: Path) -> None:
        self.identity, self.argv, self.log_path = identity, argv, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Replica:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.argv, f"--identity={self.identity}"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        wait_until(lambda: "subresources.kubevirt.io served on" in self.log() or self.proc.poll() is not None,
                   attempts=600, delay=0.1)
        assert self.proc.poll() is None, self.log()[-3000:]
        return self

    def stop(self) -> None:
        """SIGTERM, as systemd or the role's supervisor stops it, and wait until it has gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def scheduled(self, namespace: str, name: str) -> bool:
        return f"scheduled {namespace}/{name} to" in self.log()

    def reconciled_only_as_leader(self) -> bool:
        """Every binding in its log comes after the line that says it leads."""
        log = self.log()
        first_bind = log.find(" scheduled ")
        return first_bind < 0 or -1 < log.find(" is the leader") < first_bind


class Replicas:
    def __init__(self, lab, kubectl, virtctl, tmp: Path) -> None:
        self.kubectl, self.virtctl, self.tmp = kubectl, virtctl, tmp
        self.admin = KubeClient.from_kubeconfig(lab.kubeconfig)
        self.namespace = f"replicas-{uuid.uuid4().hex[:6]}"  # the controllers' (Lease, Service) and the VMIs'
        kubectl("create", "namespace", self.namespace)
        self.node = AgentLab(lab, kubectl, self.namespace)
        self.node.start_agent(f"--labels=virtops.kubevirt.io/replicas={self.namespace}")
        # One serving certificate from one CA for every replica: the APIService has one caBundle.
        ca = CertificateAuthority("virtops-subresources-ca")
        cert, key = serving_certificate(ca, "virtops-subresources", self.namespace)
        for name, data in (("tls.crt", cert), ("tls.key", key), ("ca.crt", ca.cert_pem)):
            (tmp / name).write_bytes(data)
        self.ca_pem = ca.cert_pem
        self.port = free_port()
        node_api = self.node.plane.node_api_client_files()
        self.argv = [
            sys.executable, "-m", "virtops.controller.main", f"--kubeconfig={lab.kubeconfig}",
            f"--namespace={self.namespace}", f"--api-port={self.port}", "--api-reuse-port",
            f"--tls-cert-file={tmp / 'tls.crt'}", f"--tls-private-key-file={tmp / 'tls.key'}",
            f"--tls-ca-file={tmp / 'ca.crt'}", f"--node-api-client-cert-file={node_api['cert']}",
            f"--node-api-client-key-file={node_api['key']}", f"--node-api-ca-file={node_api['ca']}",
            *LEADER_ELECTION]
        self.all: list[Replica] = []

    def replica(self, identity: str) -> Replica:
        replica = Replica(identity, [*self.argv, f"--state-dir={self.tmp / identity}"],
                          self.tmp / f"{identity}.log")
        self.all.append(replica)
        return replica.start()

    def leader(self) -> str:
        try:
            lease = self.admin.get(path_for("coordination.k8s.io/v1", "leases", self.namespace, "virtops-controller"))
        except NotFoundError:
            return ""
        return (lease.get("spec") or {}).get("holderIdentity") or ""

    def apiservice_serves_us(self) -> bool:
        try:
            spec_status = self.admin.get(APISERVICE_PATH)
        except NotFoundError:
            return False
        service = spec_status["spec"].get("service") or {}
        available = [c for c in (spec_status.get("status") or {}).get("conditions") or []
                     if c["type"] == "Available" and c["status"] == "True"]
        return bool(available) and (service.get("namespace"), service.get("port")) == (self.namespace, self.port)

    def create_pending_vmi(self, name: str) -> None:
        """A VMI for the leader to schedule: only this module's node carries the label it selects."""
        self.kubectl("create", "-f", "-", stdin=json.dumps({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "nodeSelector": {"virtops.kubevirt.io/replicas": self.namespace},
                     "domain": {"resources": {"requests": {"memory": "64Mi"}}, "devices": {}}}}))
        wait_until(lambda: self.node.phase(name) == "Running", attempts=1200, delay=0.1)

    def power(self, verb: str, name: str) -> None:
        """virtctl pause|unpause through kube-apiserver and the APIService; the Paused condition follows."""
        out = self.virtctl.run(verb, "vmi", name, "-n", self.namespace, check=False)
        assert out.returncode == 0, f"virtctl {verb}: {out.stdout}{out.stderr}"
        wait_until(lambda: (self.node.condition(name, "Paused") is not None) == (verb == "pause"),
                   attempts=300, delay=0.1)

    def close(self) -> None:
        for replica in self.all:
            replica.stop()
            print(f"--- {replica.identity} log (tail) ---\n{replica.log()[-3000:]}")
        try:
            unregister(self.admin, namespace=self.namespace)
        finally:
            self.node.close()
            self.kubectl("delete", "namespace", self.namespace, "--wait=false")


@pytest.fixture
def replicas(lab, kubevirt_api, virtctl, tmp_path):
    setup = Replicas(lab, kubevirt_api, virtctl, tmp_path)
    try:
        yield setup
    finally:
        setup.close()


def test_the_api_answers_through_either_replica_and_only_the_leader_reconciles(replicas):
    a = replicas.replica("replica-a")
    wait_until(lambda: replicas.leader() == "replica-a", attempts=300, delay=0.1)
    wait_until(replicas.apiservice_serves_us, attempts=600, delay=0.1)
    b = replicas.replica("replica-b")  # serves at once, as a follower

    replicas.create_pending_vmi("first")
    assert a.scheduled(replicas.namespace, "first") and not b.scheduled(replicas.namespace, "first")
    assert " is the leader" not in b.log(), "two replicas lead"
    replicas.power("pause", "first")

    a.stop()  # the leader goes: its port stays open in the follower
    replicas.power("unpause", "first")  # through b, whether or not it has taken the Lease yet
    wait_until(lambda: replicas.leader() == "replica-b", attempts=300, delay=0.1)
    replicas.create_pending_vmi("second")
    assert b.scheduled(replicas.namespace, "second")
    assert replicas.apiservice_serves_us(), "the new leader moved the APIService"

    again = replicas.replica("replica-a-again")  # a follower now
    b.stop()
    replicas.power("pause", "second")  # through a's successor alone
    replicas.power("unpause", "second")
    for replica in (a, b, again):
        assert replica.reconciled_only_as_leader(), f"{replica.identity} reconciled while not the leader"
