"""Secrets on nodes, the controller's side: which node may read which Secret, and the Roles that say so.
The API is a recording fake here (the integration test uses the lab's real RBAC)."""

from __future__ import annotations

from urllib.parse import unquote

from virtops.controller.secrets import NAME_PREFIX, NodeSecretAccess, grants_of
from virtops.kube import NotFoundError
from virtops.secretrefs import secret_references


def vmi(name, node=None, phase="Running", ns="ns1", deleted=False, **spec):
    meta = {"namespace": ns, "name": name}
    if deleted:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta, "spec": spec, "status": {"nodeName": node, "phase": phase} if node else {}}


CLOUD_INIT = {"volumes": [{"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": "ud"},
                                                              "networkDataSecretRef": {"name": "nd"}}}]}


def test_every_kind_of_reference_is_found_with_its_field():
    spec = {"volumes": [{"name": "d", "containerDisk": {"image": "x", "imagePullSecret": "pull"}},
                        {"name": "c", "cloudInitConfigDrive": {"secretRef": {"name": "ud"}}}],
            "accessCredentials": [{"sshPublicKey": {"source": {"secret": {"secretName": "keys"}}}}],
            "domain": {"firmware": {"kernelBoot": {"container": {"imagePullSecret": "kpull"}}}}}
    assert secret_references(spec) == [
        ("spec.volumes[0].containerDisk.imagePullSecret", "pull"),
        ("spec.volumes[1].cloudInitConfigDrive.secretRef.name", "ud"),
        ("spec.accessCredentials[0].sshPublicKey.source.secret.secretName", "keys"),
        ("spec.domain.firmware.kernelBoot.container.imagePullSecret", "kpull")]


def test_a_node_may_read_the_secrets_of_its_bound_running_vmis_only():
    grants = grants_of([
        vmi("a", "node-a", **CLOUD_INIT),
        vmi("b", "node-b", volumes=[{"name": "d", "containerDisk": {"imagePullSecret": "pull"}}]),
        vmi("pending", None, **CLOUD_INIT),
        vmi("done", "node-c", phase="Succeeded", **CLOUD_INIT),
        vmi("going", "node-d", deleted=True, **CLOUD_INIT),
        vmi("plain", "node-e"),
    ])
    assert grants == {("ns1", "node-a"): frozenset({"ud", "nd"}), ("ns1", "node-b"): frozenset({"pull"})}


class Api:
    """Roles and RoleBindings by their (unquoted) path."""

    def __init__(self):
        self.objects, self.calls = {}, []

    def list(self, path, query=None):
        return [o for p, o in self.objects.items() if "/roles/" in p], "1"

    def update(self, path, body):
        path = unquote(path)
        self.calls.append(("update", path))
        if path not in self.objects:
            raise NotFoundError(404, {"message": "not found"})
        self.objects[path] = body
        return body

    def create(self, path, body):
        path = unquote(path)
        self.calls.append(("create", path))
        self.objects[f"{path}/{body['metadata']['name']}"] = body
        return body

    def delete(self, path, body=None):
        path = unquote(path)
        self.calls.append(("delete", path))
        if self.objects.pop(path, None) is None:
            raise NotFoundError(404, {"message": "not found"})
        return {}


ROLE = f"/apis/rbac.authorization.k8s.io/v1/namespaces/ns1/roles/{NAME_PREFIX}node-a"
BINDING = f"/apis/rbac.authorization.k8s.io/v1/namespaces/ns1/rolebindings/{NAME_PREFIX}node-a"


def test_the_role_names_exactly_the_secrets_and_goes_when_none_is_left():
    api = Api()
    access = NodeSecretAccess(api)
    assert access.sync([vmi("a", "node-a", **CLOUD_INIT)])
    role = api.objects[ROLE]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                              "resourceNames": ["nd", "ud"]}]
    assert api.objects[BINDING]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:virtops:node:node-a"}]
    calls = len(api.calls)
    assert access.sync([vmi("a", "node-a", **CLOUD_INIT)]) and len(api.calls) == calls  # nothing changed: no call
    # The VMI ends: never a Role with an empty resourceNames (that would be every Secret); both objects go.
    assert access.sync([vmi("a", "node-a", phase="Failed", **CLOUD_INIT)])
    assert ROLE not in api.objects and BINDING not in api.objects


def test_a_grant_before_the_bind_survives_syncs_until_the_cache_shows_the_bind():
    api = Api()
    access = NodeSecretAccess(api)
    unbound = vmi("a", None, **CLOUD_INIT)
    access.grant(unbound, "node-a", [unbound])
    assert api.objects[ROLE]["rules"][0]["resourceNames"] == ["nd", "ud"]
    access.sync([unbound])  # an unrelated event: the bind's watch event has not come yet
    assert ROLE in api.objects
    access.sync([vmi("a", "node-a", **CLOUD_INIT)])  # bound: the cache speaks for it now
    access.sync([])  # deleted
    assert ROLE not in api.objects and access.pending == {}


def test_roles_left_by_an_earlier_controller_are_read_and_cleaned():
    api = Api()
    NodeSecretAccess(api).sync([vmi("a", "node-a", **CLOUD_INIT)])
    api.objects[ROLE]["metadata"]["labels"]["virtops.kubevirt.io/node-secrets"] = "node-a"
    restarted = NodeSecretAccess(api)
    restarted.sync([])
    assert ROLE not in api.objects
