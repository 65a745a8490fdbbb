"""The Secrets a VMI spec references, each with the spec field that names it.

One definition for both sides of the "Secrets on nodes" rule (docs/secrets-on-nodes.md): the node agent
reads exactly these, and the controller lets the VMI's node read exactly these (per-node Roles limited by
``resourceNames``). A new kind of reference is added here once and both sides follow.
"""

from __future__ import annotations

from typing import Any

CLOUD_INIT_VOLUMES = ("cloudInitNoCloud", "cloudInitConfigDrive")
# KubeVirt's JSON name of CloudInit*Source.UserDataSecretRef is "secretRef".
CLOUD_INIT_SECRET_FIELDS = ("secretRef", "networkDataSecretRef")


def _name_at(obj: Any, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj if isinstance(obj, str) and obj else None


def secret_references(spec: dict[str, Any] | None) -> list[tuple[str, str]]:
    """[(field path, Secret name)] in spec order: cloud-init user/network data, SSH keys of
    accessCredentials, and image pull secrets of containerDisk volumes and of the kernelBoot container."""
    spec = spec or {}
    found: list[tuple[str, str]] = []
    for i, volume in enumerate(spec.get("volumes") or []):
        if not isinstance(volume, dict):
            continue
        for kind in CLOUD_INIT_VOLUMES:
            for ref in CLOUD_INIT_SECRET_FIELDS:
                name = _name_at(volume, kind, ref, "name")
                if name:
                    found.append((f"spec.volumes[{i}].{kind}.{ref}.name", name))
        name = _name_at(volume, "containerDisk", "imagePullSecret")
        if name:
            found.append((f"spec.volumes[{i}].containerDisk.imagePullSecret", name))
    for i, cred in enumerate(spec.get("accessCredentials") or []):
        for kind in ("sshPublicKey", "userPassword"):
            name = _name_at(cred, kind, "source", "secret", "secretName")
            if name:
                found.append((f"spec.accessCredentials[{i}].{kind}.source.secret.secretName", name))
    name = _name_at(spec, "domain", "firmware", "kernelBoot", "container", "imagePullSecret")
    if name:
        found.append(("spec.domain.firmware.kernelBoot.container.imagePullSecret", name))
    return found


def secret_names(spec: dict[str, Any] | None) -> set[str]:
    return {name for _field, name in secret_references(spec)}
