"""cloud-init disks as KubeVirt makes them: a NoCloud or ConfigDrive ISO from the VMI's volume and Secrets.

What KubeVirt's virt-launcher writes (pkg/cloud-init), and so do we:
- NoCloud: volume id ``cidata``, files ``meta-data``, ``user-data``, ``network-config`` (only with network data);
  meta-data is the JSON object {instance-type?, instance-id, local-hostname, public-keys?}.
- ConfigDrive: volume id ``config-2``, files ``openstack/latest/meta_data.json``, ``user_data``,
  ``network_data.json`` (only with network data); meta_data.json is {instance-type?, instance-id,
  instance_type?, instance_id, hostname, uuid, public_keys?} (KubeVirt writes the legacy dashed names too).
- instance-id (NoCloud) and uuid (ConfigDrive) are spec.domain.firmware.uuid; KubeVirt's webhook always sets
  one, we have no webhook: without it the VMI's metadata.uid (stable for the VMI, also the domain's uuid).
  ConfigDrive's instance-id is ``<name>.<namespace>``. The hostname is spec.hostname, else the first label
  of the name cut to 63 characters (spec.subdomain only reaches DNS search paths in KubeVirt, not meta-data).
- public keys: every non-empty key of the Secrets of spec.accessCredentials[].sshPublicKey whose
  propagationMethod matches the volume (noCloud / configDrive), numbered "0", "1", ... in order.
- user data: exactly one of userData, userDataBase64, secretRef (Secret key ``userdata``, else ``userData``);
  network data: one of networkData, networkDataBase64, networkDataSecretRef (``networkdata``/``networkData``).
  Inline and base64 user data is limited to 2048 bytes and network data to 16384, as KubeVirt's webhook
  does; Secret contents are not limited.
- the ISO is made by ``xorrisofs`` with KubeVirt's arguments (-volid, -joliet, -rock, -partition_cyl_align on).

User data and keys are never logged and never put in an error message or the domain XML: the domain only
names the ISO, which is 0600 in the VMI's state directory (libvirt hands it to qemu's user when it starts
the domain) and goes with that directory when the VMI is deleted.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtops.agent.errors import SecretUnavailableError, UnsupportedSpecError
from virtops.kube import ForbiddenError, NotFoundError
from virtops.secretrefs import CLOUD_INIT_VOLUMES

USER_DATA_MAX_BYTES = 2048  # KubeVirt's cloudInitUserMaxLen
NETWORK_DATA_MAX_BYTES = 16384  # KubeVirt's cloudInitNetworkMaxLen
ISO_TOOL = "xorrisofs"
_SOURCE_FIELDS = ("userData", "userDataBase64", "secretRef", "networkData", "networkDataBase64",
                  "networkDataSecretRef")
_LAYOUT = {
    # kind: (volume id, ISO file name, meta-data path, user-data path, network-data path)
    "cloudInitNoCloud": ("cidata", "noCloud.iso", "meta-data", "user-data", "network-config"),
    "cloudInitConfigDrive": ("config-2", "configdrive.iso", "openstack/latest/meta_data.json",
                             "openstack/latest/user_data", "openstack/latest/network_data.json"),
}
_PROPAGATION = {"cloudInitNoCloud": "noCloud", "cloudInitConfigDrive": "configDrive"}
_INSTANCETYPE_ANNOTATIONS = ("kubevirt.io/cluster-instancetype-name", "kubevirt.io/instancetype-name")

# Reads a Secret of the VMI's namespace: its data, decoded. Raises virtops.kube's NotFoundError/ForbiddenError.
ReadSecret = Callable[[str], dict[str, bytes]]


@dataclass
class CloudInitDisk:
    """The ISO to make for a VMI: where, with which volume id, and its files (kept out of repr and logs)."""

    volume: str
    kind: str
    path: Path
    volume_id: str
    files: dict[str, bytes] = field(repr=False)


def cloud_init_volumes(spec: dict[str, Any]) -> list[tuple[int, str, dict[str, Any]]]:
    """[(volume index, kind, source)] of the spec's cloud-init volumes."""
    found = []
    for i, volume in enumerate(spec.get("volumes") or []):
        for kind in CLOUD_INIT_VOLUMES:
            if kind in volume:
                source = volume[kind]
                if source is None:
                    source = {}
                if not isinstance(source, dict):
                    raise UnsupportedSpecError(f"spec.volumes[{i}].{kind}", "must be an object")
                found.append((i, kind, source))
    return found


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json.Marshal writes it: compact, UTF-8, with <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # These characters only occur inside strings, so escaping them in the encoded text is exact.
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def hostname(vmi: dict[str, Any]) -> str:
    spec = vmi.get("spec") or {}
    return spec.get("hostname") or ((vmi.get("metadata") or {}).get("name") or "").split(".")[0][:63]


def _inline(source: dict[str, Any], where: str, raw_key: str, b64_key: str, limit: int, what: str) -> bytes | None:
    raw, encoded = source.get(raw_key), source.get(b64_key)
    if raw not in (None, "") and not isinstance(raw, str):
        raise UnsupportedSpecError(f"{where}.{raw_key}", "must be a string")
    if encoded not in (None, "") and not isinstance(encoded, str):
        raise UnsupportedSpecError(f"{where}.{b64_key}", "must be a string")
    data = None
    key = raw_key
    if raw:
        data = raw.encode()
    elif encoded:
        key = b64_key
        try:
            # Go's base64.StdEncoding skips line breaks and rejects everything else that is not base64.
            data = base64.b64decode(encoded.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError):
            raise UnsupportedSpecError(f"{where}.{b64_key}", "is not a valid base64 value") from None
    if data is not None and len(data) > limit:
        raise UnsupportedSpecError(f"{where}.{key}", f"{what} exceeds {limit} byte limit; use a Secret "
                                   f"({'secretRef' if what == 'userdata' else 'networkDataSecretRef'}) "
                                   "for larger data")
    return data


def _secret_key(read_secret: ReadSecret, namespace: str, name: str, where: str, keys: tuple[str, ...]) -> bytes:
    data = _read(read_secret, namespace, name, where)
    for key in keys:
        if key in data:
            return data[key]
    raise SecretUnavailableError(where, f"Secret {namespace}/{name} has no key {' or '.join(keys)}")


def _read(read_secret: ReadSecret, namespace: str, name: str, where: str) -> dict[str, bytes]:
    try:
        return read_secret(name)
    except NotFoundError:
        raise SecretUnavailableError(where, f"Secret {namespace}/{name} not found") from None
    except ForbiddenError:
        raise SecretUnavailableError(where, f"this node may not read Secret {namespace}/{name} "
                                     "(not granted to the VMI's node yet)") from None


def _ref_name(source: dict[str, Any], where: str, ref: str) -> str | None:
    value = source.get(ref)
    if value is None:
        return None
    name = value.get("name") if isinstance(value, dict) else None
    if not isinstance(name, str) or not name:
        raise UnsupportedSpecError(f"{where}.{ref}.name", "a Secret name is required")
    return name


def _public_keys(vmi: dict[str, Any], kind: str, read_secret: ReadSecret | None) -> dict[str, str]:
    spec = vmi.get("spec") or {}
    namespace = (vmi.get("metadata") or {}).get("namespace", "")
    keys: dict[str, str] = {}
    for i, cred in enumerate(spec.get("accessCredentials") or []):
        ssh = (cred or {}).get("sshPublicKey")
        if not ssh:
            continue
        where = f"spec.accessCredentials[{i}].sshPublicKey"
        if _PROPAGATION[kind] not in (ssh.get("propagationMethod") or {}):
            continue
        name = ((ssh.get("source") or {}).get("secret") or {}).get("secretName")
        if not isinstance(name, str) or not name:
            raise UnsupportedSpecError(f"{where}.source.secret.secretName", "a Secret name is required")
        if read_secret is None:
            raise SecretUnavailableError(f"{where}.source.secret.secretName", "Secrets are not read here")
        data = _read(read_secret, namespace, name, f"{where}.source.secret.secretName")
        for key in sorted(data):  # KubeVirt reads the mounted Secret's files in name order
            text = data[key].decode(errors="replace")
            if key.startswith("..") or not text:
                continue
            keys[str(len(keys))] = text
    return keys


def _check_credentials(vmi: dict[str, Any], kinds: set[str]) -> None:
    """accessCredentials this node can honour: SSH keys through a cloud-init volume of the matching kind."""
    for i, cred in enumerate((vmi.get("spec") or {}).get("accessCredentials") or []):
        cred = cred or {}
        if cred.get("userPassword"):
            raise UnsupportedSpecError(f"spec.accessCredentials[{i}].userPassword",
                                       "passwords are propagated by the guest agent, which this node does not do")
        ssh = cred.get("sshPublicKey")
        if not ssh:
            continue
        methods = list(ssh.get("propagationMethod") or {})
        where = f"spec.accessCredentials[{i}].sshPublicKey.propagationMethod"
        for method in methods:
            if method not in ("noCloud", "configDrive"):
                raise UnsupportedSpecError(f"{where}.{method}", "only noCloud and configDrive are supported "
                                           "on this node")
            kind = "cloudInitNoCloud" if method == "noCloud" else "cloudInitConfigDrive"
            if kind not in kinds:
                raise UnsupportedSpecError(f"{where}.{method}", f"needs a {kind} volume")
        if not methods:
            raise UnsupportedSpecError(where, "one of noCloud or configDrive is required")


def cloud_init_disk(vmi: dict[str, Any], state_dir: Path, read_secret: ReadSecret | None) -> CloudInitDisk | None:
    """Validate the VMI's cloud-init volume and read what it needs; None without one.

    ``read_secret`` None: only inline data is possible (a Secret reference raises SecretUnavailableError).
    """
    spec = vmi.get("spec") or {}
    meta = vmi.get("metadata") or {}
    volumes = cloud_init_volumes(spec)
    _check_credentials(vmi, {volume[1] for volume in volumes})
    if not volumes:
        return None
    if len(volumes) > 1:
        i, kind = volumes[1][:2]
        raise UnsupportedSpecError(f"spec.volumes[{i}].{kind}", "only one cloud-init volume is allowed per VMI")
    i, kind, source = volumes[0]
    where = f"spec.volumes[{i}].{kind}"
    if "userDataSecretRef" in source:  # the Go field's name; the API's JSON name is secretRef
        raise UnsupportedSpecError(f"{where}.userDataSecretRef", "unknown field; the Secret of the user "
                                   "data is named by secretRef")
    unknown = sorted(k for k in source if k not in _SOURCE_FIELDS)
    if unknown:
        raise UnsupportedSpecError(f"{where}.{unknown[0]}", "unknown field")
    namespace = meta.get("namespace", "")
    for raw, b64, ref in (("userData", "userDataBase64", "secretRef"),
                          ("networkData", "networkDataBase64", "networkDataSecretRef")):
        if sum(1 for k in (raw, b64, ref) if source.get(k)) > 1:
            what = "userdatasource" if raw == "userData" else "networkdatasource"
            raise UnsupportedSpecError(where, f"must have only one {what} set ({raw}, {b64} or {ref})")
    user = _inline(source, where, "userData", "userDataBase64", USER_DATA_MAX_BYTES, "userdata")
    network = _inline(source, where, "networkData", "networkDataBase64", NETWORK_DATA_MAX_BYTES, "networkdata")
    refs = [(ref, keys, _ref_name(source, where, ref)) for ref, keys in
            (("secretRef", ("userdata", "userData")), ("networkDataSecretRef", ("networkdata", "networkData")))]
    named = [ref for ref, _keys, name in refs if name]
    if read_secret is None and named:
        raise SecretUnavailableError(f"{where}.{named[0]}.name", "Secrets are not read here")
    for ref, keys, name in refs:
        if name and read_secret is not None:
            value = _secret_key(read_secret, namespace, name, f"{where}.{ref}.name", keys)
            if ref == "secretRef":
                user = value
            else:
                network = value
    if not user and not network:
        raise UnsupportedSpecError(where, "userDataBase64, userData, networkDataBase64 or networkData is required "
                                   "for a cloud-init data source")
    keys = _public_keys(vmi, kind, read_secret)
    firmware_uuid = (((spec.get("domain") or {}).get("firmware") or {}).get("uuid")) or meta.get("uid", "")
    instancetype = next((meta.get("annotations", {}).get(a) for a in _INSTANCETYPE_ANNOTATIONS
                         if (meta.get("annotations") or {}).get(a)), "")
    host = hostname(vmi)
    public_keys = dict(sorted(keys.items()))  # Go writes map keys sorted
    # (JSON name, value, omitempty) in the order of KubeVirt's structs; ConfigDrive writes the legacy names first.
    if kind == "cloudInitNoCloud":
        fields = [("instance-type", instancetype, True), ("instance-id", firmware_uuid, False),
                  ("local-hostname", host, True), ("public-keys", public_keys, True)]
    else:
        instance_id = f"{meta.get('name', '')}.{namespace}"
        fields = [("instance-type", instancetype, True), ("instance-id", instance_id, False),
                  ("instance_type", instancetype, True), ("instance_id", instance_id, False),
                  ("hostname", host, True), ("uuid", firmware_uuid, True), ("public_keys", public_keys, True)]
    metadata = {name: value for name, value, omitempty in fields if value or not omitempty}
    volume_id, iso_name, meta_path, user_path, network_path = _LAYOUT[kind]
    files = {meta_path: go_json(metadata), user_path: user or b""}
    if network:
        files[network_path] = network
    volume_name = (spec.get("volumes") or [])[i].get("name", "")
    return CloudInitDisk(volume=volume_name, kind=kind, path=state_dir / iso_name, volume_id=volume_id,
                         files=files)


def write_iso(disk: CloudInitDisk) -> None:
    """Make the ISO at disk.path (0600), atomically: a half-made ISO never has the final name."""
    disk.path.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(prefix=".cloud-init-", dir=disk.path.parent))  # 0700
    staging_iso = disk.path.with_name(disk.path.name + ".staging")
    try:
        for name, content in disk.files.items():
            target = staging_dir / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = target.open("xb")
            with fd:
                target.chmod(0o600)
                fd.write(content)
        staging_iso.unlink(missing_ok=True)
        try:
            result = subprocess.run([ISO_TOOL, "-output", str(staging_iso), "-volid", disk.volume_id, "-joliet",
                                     "-rock", "-partition_cyl_align", "on", str(staging_dir)],
                                    capture_output=True, text=True, check=False, timeout=60)
        except FileNotFoundError:
            raise RuntimeError(f"{ISO_TOOL} is not installed on this node (Debian package xorriso)") from None
        if result.returncode != 0:
            # xorriso's messages name paths and sizes, never file contents.
            tail = " ".join(result.stderr.strip().splitlines()[-2:])
            raise RuntimeError(f"{ISO_TOOL} failed with exit code {result.returncode}: {tail}")
        staging_iso.chmod(0o600)
        staging_iso.rename(disk.path)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
        staging_iso.unlink(missing_ok=True)
