"""cloud-init disks: the ISO's files read back with xorriso (not with our own code), KubeVirt's meta-data, and
every bad input named by its field without the user data in the message."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from virtops.agent import cloudinit
from virtops.agent.cloudinit import cloud_init_disk, go_json, write_iso
from virtops.agent.domain import plan_domain, prepare_files
from virtops.agent.errors import SecretUnavailableError, UnsupportedSpecError
from virtops.kube import ForbiddenError, NotFoundError

UID = "0b9f5a8e-6d1c-4c53-9d3e-2f1f7d0f2a11"
SECRET_TEXT = "#cloud-config\npassword: hunter2-do-not-log\n"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyA user@a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyB user@b"


def vmi_with(volume: dict, *, disk: dict | None = None, **spec) -> dict:
    obj = {
        "metadata": {"namespace": "ns1", "name": "vm1", "uid": UID},
        "spec": {"domain": {"resources": {"requests": {"memory": "64Mi"}},
                            "devices": {"disks": [dict({"name": "cloudinitdisk"}, **(disk or {"disk": {}}))]}},
                 "volumes": [dict({"name": "cloudinitdisk"}, **volume)]},
        "status": {"nodeName": "node-a"},
    }
    obj["spec"].update(copy.deepcopy(spec))
    return obj


class Secrets:
    """The Secrets of namespace ns1 as the API would give them to this node (a unit test's one fake)."""

    def __init__(self, secrets: dict[str, dict[str, str]], forbidden: tuple[str, ...] = ()) -> None:
        self.secrets, self.forbidden, self.reads = secrets, forbidden, []

    def __call__(self, name: str) -> dict[str, bytes]:
        self.reads.append(name)
        if name in self.forbidden:
            raise ForbiddenError(403, {"message": f'secrets "{name}" is forbidden'})
        if name not in self.secrets:
            raise NotFoundError(404, {"message": f'secrets "{name}" not found'})
        return {k: v.encode() for k, v in self.secrets[name].items()}


def read_iso(iso: Path, into: Path) -> tuple[str, dict[str, bytes]]:
    """Volume id and files of an ISO, as xorriso reads them."""
    info = subprocess.run(["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True, check=True)
    volume_id = next(line.split(":", 1)[1].strip() for line in (info.stdout + info.stderr).splitlines()
                     if line.startswith("Volume Id"))
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(into)],
                   capture_output=True, check=True)
    files = {str(p.relative_to(into)): p.read_bytes() for p in sorted(into.rglob("*")) if p.is_file()}
    return volume_id, files


def make(obj: dict, tmp_path: Path, secrets: Secrets | None = None) -> tuple[str, dict[str, bytes], Path]:
    state = tmp_path / "state"
    plan = plan_domain(obj, domain_type="qemu", state_dir=state, images={},
                       read_secret=secrets)
    prepare_files(plan, state)
    iso = next(f.path for f in plan.files if f.cloud_init is not None)
    volume_id, files = read_iso(iso, tmp_path / "extracted")
    return volume_id, files, iso


def test_nocloud_iso_has_kubevirts_files_and_meta_data(tmp_path):
    obj = vmi_with({"cloudInitNoCloud": {"userData": SECRET_TEXT, "networkData": "version: 2\n"}},
                   hostname="web-1")
    volume_id, files, iso = make(obj, tmp_path)
    assert volume_id == "cidata"
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert files["meta-data"] == b'{"instance-id":"%s","local-hostname":"web-1"}' % UID.encode()
    assert files["user-data"] == SECRET_TEXT.encode()
    assert files["network-config"] == b"version: 2\n"
    assert iso.name == "noCloud.iso" and iso.stat().st_mode & 0o777 == 0o600
    # Nothing else stays next to it: no staging ISO, no directory with the plain files.
    assert sorted(p.name for p in iso.parent.iterdir()) == ["noCloud.iso"]


def test_nocloud_without_network_data_has_no_network_config_and_base64_user_data(tmp_path):
    encoded = base64.b64encode(SECRET_TEXT.encode()).decode()
    obj = vmi_with({"cloudInitNoCloud": {"userDataBase64": encoded[:20] + "\n" + encoded[20:]}})
    obj["spec"]["domain"]["firmware"] = {"uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223"}
    files = make(obj, tmp_path)[1]
    assert sorted(files) == ["meta-data", "user-data"]
    assert files["user-data"] == SECRET_TEXT.encode()
    assert json.loads(files["meta-data"]) == {"instance-id": "5d307ca9-b3ef-428c-8861-06e72d69f223",
                                              "local-hostname": "vm1"}


def test_configdrive_reads_secrets_and_puts_ssh_keys_in_meta_data(tmp_path):
    secrets = Secrets({"ud": {"userData": SECRET_TEXT}, "nd": {"networkdata": '{"links":[]}'},
                       "keys": {"b": KEY_B, "a": KEY_A, "empty": ""}, "other": {"k": "ssh-rsa OTHER"}})
    obj = vmi_with({"cloudInitConfigDrive": {"secretRef": {"name": "ud"}, "networkDataSecretRef": {"name": "nd"}}},
                   accessCredentials=[
                       {"sshPublicKey": {"source": {"secret": {"secretName": "keys"}},
                                         "propagationMethod": {"configDrive": {}}}}])
    obj["metadata"]["annotations"] = {"kubevirt.io/instancetype-name": "u1.small"}
    volume_id, files, iso = make(obj, tmp_path, secrets)
    assert volume_id == "config-2" and iso.name == "configdrive.iso"
    assert sorted(files) == ["openstack/latest/meta_data.json", "openstack/latest/network_data.json",
                             "openstack/latest/user_data"]
    assert files["openstack/latest/user_data"] == SECRET_TEXT.encode()
    assert files["openstack/latest/network_data.json"] == b'{"links":[]}'
    # Go's field order: the legacy dashed names first, then the ConfigDrive ones; keys in Secret key order.
    assert files["openstack/latest/meta_data.json"] == (
        '{"instance-type":"u1.small","instance-id":"vm1.ns1","instance_type":"u1.small","instance_id":"vm1.ns1",'
        f'"hostname":"vm1","uuid":"{UID}","public_keys":{{"0":"{KEY_A}","1":"{KEY_B}"}}}}').encode()
    assert sorted(secrets.reads) == ["keys", "nd", "ud"]  # "other" is referenced by nothing: never read


def test_nocloud_public_keys_only_from_credentials_propagated_by_nocloud(tmp_path):
    secrets = Secrets({"ud": {"userdata": "#cloud-config\n"}, "mine": {"key": KEY_A}, "cd": {"key": KEY_B}})
    obj = vmi_with({"cloudInitNoCloud": {"secretRef": {"name": "ud"}}}, accessCredentials=[
        {"sshPublicKey": {"source": {"secret": {"secretName": "mine"}}, "propagationMethod": {"noCloud": {}}}}])
    files = make(obj, tmp_path, secrets)[1]
    assert json.loads(files["meta-data"]) == {"instance-id": UID, "local-hostname": "vm1",
                                              "public-keys": {"0": KEY_A}}
    assert "cd" not in secrets.reads


@pytest.mark.parametrize("name, hostname, expected", [
    ("vm1", None, "vm1"), ("a.b.c", None, "a"), ("x" * 70, None, "x" * 63), ("vm1", "given", "given")])
def test_hostname_is_spec_hostname_else_the_names_first_label(name, hostname, expected):
    obj = {"metadata": {"name": name}, "spec": {"hostname": hostname} if hostname else {}}
    assert cloudinit.hostname(obj) == expected


def test_go_json_escapes_like_encoding_json():
    assert go_json({"k": "<a&b> é"}) == '{"k":"\\u003ca\\u0026b\\u003e é"}'.encode()


def test_domain_attaches_the_iso_raw_and_never_holds_user_data(tmp_path):
    obj = vmi_with({"cloudInitNoCloud": {"userData": SECRET_TEXT}}, disk={"cdrom": {"bus": "sata"}})
    plan = plan_domain(obj, domain_type="qemu", state_dir=tmp_path / "s", images={})
    assert "hunter2" not in plan.xml and "hunter2" not in repr(plan)
    disk = ET.fromstring(plan.xml).find("devices/disk")
    assert disk.get("device") == "cdrom" and disk.find("readonly") is not None
    assert disk.find("driver").get("type") == "raw"
    assert disk.find("source").get("file") == str(tmp_path / "s" / "noCloud.iso")
    assert disk.find("target").attrib == {"dev": "sda", "bus": "sata"}


def test_a_cloud_init_volume_without_a_disk_makes_no_iso(tmp_path):
    obj = vmi_with({"cloudInitNoCloud": {"userData": SECRET_TEXT}})
    obj["spec"]["domain"]["devices"]["disks"] = []
    plan = plan_domain(obj, domain_type="qemu", state_dir=tmp_path / "s", images={})
    assert plan.files == []


BAD = [
    ({"cloudInitNoCloud": {"userData": SECRET_TEXT, "userDataBase64": "I2Nsb3VkLWNvbmZpZwo="}}, {},
     "spec.volumes[0].cloudInitNoCloud", "only one userdatasource"),
    ({"cloudInitConfigDrive": {"userData": SECRET_TEXT, "secretRef": {"name": "ud"}}}, {},
     "spec.volumes[0].cloudInitConfigDrive", "only one userdatasource"),
    ({"cloudInitNoCloud": {"networkData": "a", "networkDataBase64": "YQ=="}}, {},
     "spec.volumes[0].cloudInitNoCloud", "only one networkdatasource"),
    ({"cloudInitNoCloud": {"userDataBase64": "not base64 hunter2!"}}, {},
     "spec.volumes[0].cloudInitNoCloud.userDataBase64", "not a valid base64"),
    ({"cloudInitNoCloud": {"networkDataBase64": "%%%"}}, {},
     "spec.volumes[0].cloudInitNoCloud.networkDataBase64", "not a valid base64"),
    ({"cloudInitNoCloud": {"userData": "hunter2" + "x" * 2042}}, {},
     "spec.volumes[0].cloudInitNoCloud.userData", "exceeds 2048 byte limit"),
    ({"cloudInitNoCloud": {"userDataBase64": base64.b64encode(b"hunter2" + b"x" * 2042).decode()}}, {},
     "spec.volumes[0].cloudInitNoCloud.userDataBase64", "exceeds 2048 byte limit"),
    ({"cloudInitNoCloud": {"userData": "#cloud-config", "networkData": "x" * 16385}}, {},
     "spec.volumes[0].cloudInitNoCloud.networkData", "exceeds 16384 byte limit"),
    ({"cloudInitNoCloud": {}}, {}, "spec.volumes[0].cloudInitNoCloud", "is required"),
    ({"cloudInitNoCloud": {"userDataSecretRef": {"name": "ud"}}}, {},
     "spec.volumes[0].cloudInitNoCloud.userDataSecretRef", "secretRef"),
    ({"cloudInitNoCloud": {"secretRef": {}}}, {}, "spec.volumes[0].cloudInitNoCloud.secretRef.name", "required"),
    ({"cloudInitNoCloud": {"userData": "#cloud-config"}},
     {"accessCredentials": [{"sshPublicKey": {"source": {"secret": {"secretName": "k"}},
                                              "propagationMethod": {"configDrive": {}}}}]},
     "spec.accessCredentials[0].sshPublicKey.propagationMethod.configDrive", "needs a cloudInitConfigDrive"),
    ({"cloudInitNoCloud": {"userData": "#cloud-config"}},
     {"accessCredentials": [{"sshPublicKey": {"source": {"secret": {"secretName": "k"}},
                                              "propagationMethod": {"qemuGuestAgent": {"users": ["a"]}}}}]},
     "spec.accessCredentials[0].sshPublicKey.propagationMethod.qemuGuestAgent", "only noCloud and configDrive"),
    ({"cloudInitNoCloud": {"userData": "#cloud-config"}},
     {"accessCredentials": [{"userPassword": {"source": {"secret": {"secretName": "k"}}}}]},
     "spec.accessCredentials[0].userPassword", "guest agent"),
]


@pytest.mark.parametrize("volume, spec, field, words", BAD)
def test_bad_cloud_init_input_fails_naming_the_field(tmp_path, volume, spec, field, words):
    obj = vmi_with(volume, **spec)
    with pytest.raises(UnsupportedSpecError) as info:
        plan_domain(obj, domain_type="qemu", state_dir=tmp_path / "s", images={},
                    read_secret=Secrets({"ud": {"userdata": SECRET_TEXT}, "k": {"a": KEY_A}}))
    assert not isinstance(info.value, SecretUnavailableError)  # the spec is wrong: the VMI fails
    assert info.value.field == field and words in info.value.message
    assert "hunter2" not in str(info.value)
    assert not (tmp_path / "s").exists()


def test_a_second_cloud_init_volume_is_refused(tmp_path):
    obj = vmi_with({"cloudInitNoCloud": {"userData": "#cloud-config"}})
    obj["spec"]["volumes"].append({"name": "cd", "cloudInitConfigDrive": {"userData": "#cloud-config"}})
    with pytest.raises(UnsupportedSpecError) as info:
        cloud_init_disk(obj, tmp_path, None)
    assert info.value.field == "spec.volumes[1].cloudInitConfigDrive"


@pytest.mark.parametrize("volume, spec, secrets, field, words", [
    ({"cloudInitNoCloud": {"secretRef": {"name": "gone"}}}, {}, Secrets({}),
     "spec.volumes[0].cloudInitNoCloud.secretRef.name", "Secret ns1/gone not found"),
    ({"cloudInitNoCloud": {"secretRef": {"name": "ud"}}}, {}, Secrets({"ud": {"user-data": SECRET_TEXT}}),
     "spec.volumes[0].cloudInitNoCloud.secretRef.name", "has no key userdata or userData"),
    ({"cloudInitConfigDrive": {"userData": "#cloud-config", "networkDataSecretRef": {"name": "nd"}}}, {},
     Secrets({"nd": {"network": "x"}}),
     "spec.volumes[0].cloudInitConfigDrive.networkDataSecretRef.name", "has no key networkdata or networkData"),
    ({"cloudInitNoCloud": {"secretRef": {"name": "ud"}}}, {}, Secrets({"ud": {"userdata": "x"}}, forbidden=("ud",)),
     "spec.volumes[0].cloudInitNoCloud.secretRef.name", "may not read Secret ns1/ud"),
    ({"cloudInitNoCloud": {"userData": "#cloud-config"}},
     {"accessCredentials": [{"sshPublicKey": {"source": {"secret": {"secretName": "keys"}},
                                              "propagationMethod": {"noCloud": {}}}}]}, Secrets({}),
     "spec.accessCredentials[0].sshPublicKey.source.secret.secretName", "Secret ns1/keys not found"),
])
def test_an_unreadable_secret_is_named_and_retried(tmp_path, volume, spec, secrets, field, words):
    with pytest.raises(SecretUnavailableError) as info:
        plan_domain(vmi_with(volume, **spec), domain_type="qemu", state_dir=tmp_path / "s",
                    images={}, read_secret=secrets)
    assert info.value.field == field and words in info.value.message
    assert "hunter2" not in str(info.value)
    assert not (tmp_path / "s").exists()


def test_a_failing_iso_tool_leaves_nothing_behind(tmp_path, monkeypatch):
    disk = cloud_init_disk(vmi_with({"cloudInitNoCloud": {"userData": SECRET_TEXT}}), tmp_path / "s", None)
    monkeypatch.setattr(cloudinit, "ISO_TOOL", "false")  # exits 1, like xorrisofs on a full disk
    with pytest.raises(RuntimeError, match="false failed with exit code 1"):
        write_iso(disk)
    assert list((tmp_path / "s").iterdir()) == []
