"""Secrets on nodes: each node may read exactly the Secrets that VMIs bound to it reference.

The Kubernetes node authorizer's rule, built from plain RBAC so that it works on any cluster: per namespace
and node, a Role ``virtops:node-secrets:<node>`` with one rule, ``get`` on ``secrets`` limited by
``resourceNames`` to the referenced Secrets, and a RoleBinding of the same name for the node's user
``system:virtops:node:<node>``. The controller keeps them in step with its VMI cache: a Role grows before a
VMI is bound to the node (so the agent never sees a VMI whose Secrets it may not read yet) and shrinks, or
goes with its RoleBinding, when VMIs end or are deleted. A Role with an empty ``resourceNames`` would mean
*every* Secret: such a Role is never written, it is deleted instead. See docs/secrets-on-nodes.md.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from virtops.kube import ConflictError, KubeClient, NotFoundError, path_for
from virtops.kubevirt import FINAL_PHASES
from virtops.secretrefs import secret_names

log = logging.getLogger("virtops.controller.secrets")

RBAC_API = "rbac.authorization.k8s.io/v1"
NODE_LABEL = "virtops.kubevirt.io/node-secrets"
NAME_PREFIX = "virtops:node-secrets:"

Grants = dict[tuple[str, str], frozenset[str]]  # (namespace, node) -> Secret names


def node_user(node: str) -> str:
    return f"system:virtops:node:{node}"


def grants_of(vmis: list[dict[str, Any]]) -> Grants:
    """What each node may read per namespace: the Secrets of the VMIs bound to it that still run or start."""
    grants: dict[tuple[str, str], set[str]] = {}
    for vmi in vmis:
        meta, status = vmi.get("metadata") or {}, vmi.get("status") or {}
        node = status.get("nodeName")
        if not node or meta.get("deletionTimestamp") or status.get("phase") in FINAL_PHASES:
            continue
        names = secret_names(vmi.get("spec"))
        if names:
            grants.setdefault((meta.get("namespace", ""), node), set()).update(names)
    return {key: frozenset(names) for key, names in grants.items()}


class NodeSecretAccess:
    """Writes the per-node Roles and RoleBindings; called from the controller's one worker."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.applied: Grants | None = None  # what the cluster holds, once read
        # VMIs granted for a bind the cache does not show yet: (namespace, name) -> (node, names).
        self.pending: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}

    # --- the two entry points ---------------------------------------------------
    def grant(self, vmi: dict[str, Any], node: str, vmis: list[dict[str, Any]]) -> None:
        """Before ``vmi`` is bound to ``node``: let the node read its Secrets. Raises when that failed."""
        names = frozenset(secret_names(vmi.get("spec")))
        if not names:
            return
        meta = vmi["metadata"]
        with self.lock:
            self.pending[(meta["namespace"], meta["name"])] = (node, names)
        self.sync(vmis, strict=True)

    def forget(self, vmi: dict[str, Any]) -> None:
        """The bind did not happen: the next sync takes the grant back."""
        meta = vmi["metadata"]
        with self.lock:
            self.pending.pop((meta["namespace"], meta["name"]), None)

    def sync(self, vmis: list[dict[str, Any]], strict: bool = False) -> bool:
        """Bring the Roles in line with ``vmis`` (the cache) and pending binds; False if something failed
        (the caller tries again). ``strict`` raises instead."""
        if self.applied is None:
            self.applied = self._read_applied()
        wanted = self._wanted(vmis)
        ok = True
        for key in sorted(set(wanted) | set(self.applied)):
            names = wanted.get(key, frozenset())
            if self.applied.get(key, frozenset()) == names:
                continue
            try:
                self._write(key, names)
            except Exception as exc:  # noqa: BLE001 - retried; a namespace may be going away
                if strict:
                    raise
                ok = False
                log.warning("cannot update the Secrets node %s may read in namespace %s: %s", key[1], key[0], exc)
                continue
            if names:
                self.applied[key] = names
            else:
                self.applied.pop(key, None)
        return ok

    # --- internals ----------------------------------------------------------------
    def _wanted(self, vmis: list[dict[str, Any]]) -> Grants:
        by_key = {(v["metadata"]["namespace"], v["metadata"]["name"]): v for v in vmis}
        wanted = {k: set(v) for k, v in grants_of(vmis).items()}
        with self.lock:
            for key, (node, names) in list(self.pending.items()):
                cached = by_key.get(key)
                if cached is None or (cached.get("status") or {}).get("nodeName"):
                    del self.pending[key]  # gone, or bound: the cache speaks for it now
                    continue
                wanted.setdefault((key[0], node), set()).update(names)
        return {k: frozenset(v) for k, v in wanted.items()}

    def _read_applied(self) -> Grants:
        items, _rv = self.client.list(path_for(RBAC_API, "roles"), {"labelSelector": NODE_LABEL})
        applied: Grants = {}
        for role in items:
            meta = role["metadata"]
            node = (meta.get("labels") or {}).get(NODE_LABEL, "")
            names = frozenset(n for rule in role.get("rules") or [] for n in rule.get("resourceNames") or [])
            applied[(meta["namespace"], node)] = names
        return applied

    def _write(self, key: tuple[str, str], names: frozenset[str]) -> None:
        namespace, node = key
        name = NAME_PREFIX + node
        meta = {"name": name, "namespace": namespace,
                "labels": {NODE_LABEL: node, "app.kubernetes.io/managed-by": "virtops.kubevirt"}}
        role_path = path_for(RBAC_API, "roles", namespace, name)
        binding_path = path_for(RBAC_API, "rolebindings", namespace, name)
        if not names:  # never a Role without resourceNames: that would grant every Secret
            for path in (binding_path, role_path):
                try:
                    self.client.delete(path)
                except NotFoundError:
                    pass
            log.info("node %s may read no Secret in namespace %s any more", node, namespace)
            return
        role = {"apiVersion": RBAC_API, "kind": "Role", "metadata": meta,
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                           "resourceNames": sorted(names)}]}
        try:
            self.client.update(role_path, role)
        except NotFoundError:
            self.client.create(path_for(RBAC_API, "roles", namespace), role)
        binding = {"apiVersion": RBAC_API, "kind": "RoleBinding", "metadata": meta,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": node_user(node)}]}
        try:
            self.client.create(path_for(RBAC_API, "rolebindings", namespace), binding)
        except ConflictError:
            pass  # it never changes
        log.info("node %s may read Secrets %s in namespace %s", node, ", ".join(sorted(names)), namespace)
