"""VMI spec -> libvirt domain XML: sizes, CPU topology, user-mode interfaces, disks, and the fields we refuse."""

from __future__ import annotations

import copy
import subprocess
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest
from virtops.agent import domain
from virtops.agent.domain import (
    METADATA_NS,
    UnsupportedSpecError,
    domain_xml,
    parse_quantity,
    plan_domain,
    prepare_files,
    status_interfaces,
)

BASE = {
    "metadata": {"namespace": "ns1", "name": "vm1", "uid": "0b9f5a8e-6d1c-4c53-9d3e-2f1f7d0f2a11"},
    "spec": {"domain": {"resources": {"requests": {"memory": "64Mi"}}, "devices": {}}},
    "status": {"nodeName": "node-a"},
}


def vmi(**changes) -> dict:
    obj = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        target = obj["spec"]
        *parents, leaf = dotted.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return obj


def pulled(tmp_path: Path) -> dict[str, Path]:
    """The images the node agent pulled (reference -> unpacked file system), as the tests leave them."""
    root = tmp_path / "images"
    return {f"example.org/{d.name.replace('_', ':')}": d for d in sorted(root.iterdir())} if root.is_dir() else {}


def xml_of(obj: dict, tmp_path: Path) -> ET.Element:
    return ET.fromstring(domain_xml(obj, domain_type="qemu", state_dir=tmp_path / "state", images=pulled(tmp_path)))


def unsupported(obj: dict, tmp_path: Path) -> UnsupportedSpecError:
    with pytest.raises(UnsupportedSpecError) as info:
        domain_xml(obj, domain_type="qemu", state_dir=tmp_path / "state", images=pulled(tmp_path))
    return info.value


@pytest.mark.parametrize("text, expected", [
    ("64Mi", 64 * 2**20), ("1Gi", 2**30), ("128M", 128 * 10**6), ("1.5Gi", 3 * 2**29), ("500m", Decimal("0.5")),
    ("2", 2), (3, 3), ("1e3", 1000), ("2k", 2000), ("1Ki", 1024),
])
def test_quantities_parse_to_base_units(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "Mi", "64MB", "1.2.3", "-", "64 Mi"])
def test_malformed_quantities_are_rejected(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_diskless_vmi_gets_name_memory_marker_serial_and_a_user_interface(tmp_path):
    root = xml_of(vmi(), tmp_path)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "ns1_vm1"
    assert root.findtext("uuid") == BASE["metadata"]["uid"]
    assert root.find("memory").get("unit") == "KiB" and root.findtext("memory") == "65536"
    assert root.findtext("vcpu") == "1"
    assert root.find("os/type").get("machine") == "q35"
    marker = root.find(f"metadata/{{{METADATA_NS}}}vmi")
    assert marker.attrib == {"namespace": "ns1", "name": "vm1", "uid": BASE["metadata"]["uid"], "node": "node-a"}
    serial = root.find("devices/serial")
    # A socket for `virtctl console`, and still a log of everything the guest printed.
    assert serial.get("type") == "unix"
    assert serial.find("source").attrib == {"mode": "bind", "path": str(tmp_path / "state" / "serial.sock")}
    assert serial.find("log").get("file") == str(tmp_path / "state" / "serial.log")
    assert root.find("devices/graphics").get("type") == "vnc"
    assert root.find("devices/graphics/listen").attrib == {"type": "socket"}
    interfaces = root.findall("devices/interface")
    assert [i.get("type") for i in interfaces] == ["user"]
    assert interfaces[0].find("model").get("type") == "virtio"
    assert root.findall("devices/disk") == []


def test_guest_memory_wins_over_requests_and_decimal_units_round_up(tmp_path):
    obj = vmi(domain__memory={"guest": "128M"})
    assert xml_of(obj, tmp_path).findtext("memory") == str(-(-128 * 10**6 // 1024))


def test_cpu_topology_sets_vcpus_and_topology(tmp_path):
    root = xml_of(vmi(domain__cpu={"sockets": 2, "cores": 3, "threads": 1}), tmp_path)
    assert root.findtext("vcpu") == "6"
    assert root.find("cpu/topology").attrib == {"sockets": "2", "dies": "1", "cores": "3", "threads": "1"}


def test_masquerade_and_slirp_interfaces_are_user_mode_and_keep_their_mac(tmp_path):
    obj = vmi(domain__devices__interfaces=[
        {"name": "default", "masquerade": {}, "macAddress": "02:00:00:AA:BB:CC"},
        {"name": "second", "slirp": {}, "model": "e1000"},
    ], networks=[{"name": "default", "pod": {}}, {"name": "second", "pod": {}}])
    interfaces = xml_of(obj, tmp_path).findall("devices/interface")
    assert [i.get("type") for i in interfaces] == ["user", "user"]
    assert interfaces[0].find("mac").get("address") == "02:00:00:aa:bb:cc"
    assert interfaces[1].find("mac") is None
    assert interfaces[1].find("model").get("type") == "e1000"
    assert "network" not in ET.tostring(xml_of(obj, tmp_path), encoding="unicode").lower().replace("pod", "")


def test_a_nic_without_boot_order_has_no_option_rom_and_one_with_it_is_a_boot_device(tmp_path):
    # KubeVirt's virt-launcher: iPXE only on a NIC the user boots from.
    obj = vmi(domain__devices__interfaces=[{"name": "default", "masquerade": {}},
                                           {"name": "pxe", "slirp": {}, "bootOrder": 2}],
              networks=[{"name": "default", "pod": {}}, {"name": "pxe", "pod": {}}])
    first, second = xml_of(obj, tmp_path).findall("devices/interface")
    assert first.find("rom").attrib == {"enabled": "no"} and first.find("boot") is None
    assert second.find("rom") is None and second.find("boot").get("order") == "2"
    default = xml_of(vmi(), tmp_path).find("devices/interface")  # the defaulted pod interface
    assert default.find("rom").attrib == {"enabled": "no"}


@pytest.mark.parametrize("order", [0, -1, "1", True, 1.5])
def test_a_boot_order_that_is_not_a_whole_number_from_1_names_the_field(tmp_path, order):
    obj = vmi(domain__devices__interfaces=[{"name": "default", "masquerade": {}, "bootOrder": order}],
              networks=[{"name": "default", "pod": {}}])
    assert unsupported(obj, tmp_path).field == "spec.domain.devices.interfaces[0].bootOrder"
    obj = vmi(domain__devices__disks=[{"name": "scratch", "disk": {}, "bootOrder": order}],
              volumes=[{"name": "scratch", "emptyDisk": {"capacity": "1Mi"}}])
    assert unsupported(obj, tmp_path).field == "spec.domain.devices.disks[0].bootOrder"


def test_two_devices_with_one_boot_order_are_refused_naming_the_second(tmp_path):
    obj = vmi(domain__devices__disks=[{"name": "scratch", "disk": {}, "bootOrder": 1}],
              domain__devices__interfaces=[{"name": "default", "masquerade": {}, "bootOrder": 1}],
              volumes=[{"name": "scratch", "emptyDisk": {"capacity": "1Mi"}}],
              networks=[{"name": "default", "pod": {}}])
    error = unsupported(obj, tmp_path)
    assert error.field == "spec.domain.devices.interfaces[0].bootOrder"
    assert "spec.domain.devices.disks[0]" in error.message


def test_autoattach_false_means_no_interface(tmp_path):
    assert xml_of(vmi(domain__devices__autoattachPodInterface=False), tmp_path).findall("devices/interface") == []


def test_machine_type_pc_is_kept(tmp_path):
    assert xml_of(vmi(domain__machine={"type": "pc"}), tmp_path).find("os/type").get("machine") == "pc"


def test_names_are_escaped_not_injected(tmp_path):
    obj = vmi()
    obj["metadata"]["name"] = "a<b>&c"
    assert xml_of(obj, tmp_path).findtext("name") == "ns1_a<b>&c"


@pytest.mark.parametrize("changes, field", [
    ({"domain__devices__interfaces": [{"name": "default", "bridge": {}}],
      "networks": [{"name": "default", "pod": {}}]}, "spec.domain.devices.interfaces[0].bridge"),
    ({"domain__devices__interfaces": [{"name": "default", "masquerade": {}}],
      "networks": [{"name": "default", "multus": {"networkName": "x"}}]}, "spec.networks[0].multus"),
    ({"domain__devices__interfaces": [{"name": "nope", "masquerade": {}}],
      "networks": [{"name": "default", "pod": {}}]}, "spec.domain.devices.interfaces[0].name"),
    ({"domain__devices__disks": [{"name": "d", "disk": {}}], "volumes": [{"name": "d", "hostDisk": {"path": "/x"}}]},
     "spec.volumes[0].hostDisk"),
    ({"domain__devices__disks": [{"name": "d", "disk": {}}],
      "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]},
     "spec.volumes[0].persistentVolumeClaim"),
    ({"domain__devices__disks": [{"name": "ci", "cdrom": {"bus": "virtio"}}],
      "volumes": [{"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config"}}]},
     "spec.domain.devices.disks[0].cdrom.bus"),
    ({"domain__devices__disks": [{"name": "missing", "disk": {}}]}, "spec.domain.devices.disks[0].name"),
    ({"domain__devices__disks": [{"name": "d", "cdrom": {}}],
      "volumes": [{"name": "d", "emptyDisk": {"capacity": "1Gi"}}]}, "spec.domain.devices.disks[0].cdrom"),
    ({"domain__devices__disks": [{"name": "d", "disk": {}}], "volumes": [{"name": "d", "emptyDisk": {}}]},
     "spec.volumes[0].emptyDisk.capacity"),
    ({"domain__resources": {}}, "spec.domain.resources.requests.memory"),
    ({"domain__memory": {"guest": "lots"}}, "spec.domain.memory.guest"),
    ({"domain__cpu": {"cores": 0}}, "spec.domain.cpu.cores"),
    ({"domain__machine": {"type": "virt"}}, "spec.domain.machine.type"),
    ({"domain__devices__gpus": [{"name": "g", "deviceName": "x"}]}, "spec.domain.devices.gpus"),
])
def test_unsupported_fields_are_named(tmp_path, changes, field):
    error = unsupported(vmi(**changes), tmp_path)
    assert error.field == field
    assert str(error).startswith(field + ": ")


def test_volume_without_a_disk_is_refused_naming_it(tmp_path):
    error = unsupported(vmi(volumes=[{"name": "data", "emptyDisk": {"capacity": "1Gi"}}]), tmp_path)
    assert error.field == "spec.volumes[0]"
    assert "no disk in spec.domain.devices.disks uses volume 'data'" in error.message


def test_an_empty_disk_larger_than_qcow2_allows_is_refused_naming_the_field(tmp_path):
    def with_capacity(capacity):
        return vmi(domain__devices__disks=[{"name": "big", "disk": {}}],
                   volumes=[{"name": "big", "emptyDisk": {"capacity": capacity}}])

    error = unsupported(with_capacity("100Ei"), tmp_path)
    assert str(error) == "spec.volumes[0].emptyDisk.capacity: 100Ei is larger than a qcow2 disk can be (at most 2Pi)"
    assert unsupported(with_capacity("2251799813685249"), tmp_path).field == "spec.volumes[0].emptyDisk.capacity"
    plan_domain(with_capacity("2Pi"), domain_type="qemu", state_dir=tmp_path / "state", images={})


def test_more_disks_on_a_bus_than_it_has_names_is_refused_naming_the_disk(tmp_path):
    names = [f"d{i}" for i in range(27)]
    obj = vmi(domain__devices__disks=[{"name": n, "disk": {"bus": "virtio"}} for n in names],
              volumes=[{"name": n, "emptyDisk": {"capacity": "1Mi"}} for n in names])
    error = unsupported(obj, tmp_path)  # it raised IndexError, and the agent retried the VMI forever
    assert error.field == "spec.domain.devices.disks[26]"
    assert "at most 26 (vda to vdz)" in str(error)
    del obj["spec"]["domain"]["devices"]["disks"][26], obj["spec"]["volumes"][26]
    plan = plan_domain(obj, domain_type="qemu", state_dir=tmp_path / "state", images={})
    assert "vdz" in plan.xml


def test_container_disk_not_pulled_names_the_field(tmp_path):
    obj = vmi(domain__devices__disks=[{"name": "root", "disk": {"bus": "virtio"}}],
              volumes=[{"name": "root", "containerDisk": {"image": "quay.io/containerdisks/fedora:39"}}])
    error = unsupported(obj, tmp_path)
    assert error.field == "spec.volumes[0].containerDisk.image"
    assert "'quay.io/containerdisks/fedora:39' is not pulled on this node" in str(error)
    assert not (tmp_path / "state").exists()  # validation creates nothing


def container_disk(tmp_path: Path, name: str, *files: str) -> Path:
    """A pulled containerDisk example.org/NAME whose /disk/ holds ``files`` (qcow2 of 16M each)."""
    disk_dir = tmp_path / "images" / name / "disk"
    disk_dir.mkdir(parents=True)
    for file in files:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk_dir / file), "16M"], check=True)
    return disk_dir


def root_disk(source: dict) -> dict:
    """A VMI whose disk ``root`` is the containerDisk ``source``."""
    return vmi(domain__devices__disks=[{"name": "root", "disk": {}}],
               volumes=[{"name": "root", "containerDisk": source}])


@pytest.mark.parametrize("files, text", [
    ((), "the image is not a containerDisk: /disk/ holds no file, not exactly one disk"),
    (("a.qcow2", "b.qcow2"), "/disk/ holds 2 files (a.qcow2, b.qcow2)"),
])
def test_container_disk_without_exactly_one_disk_names_the_image_field(tmp_path, files, text):
    container_disk(tmp_path, "empty_1", *files)
    obj = root_disk({"image": "example.org/empty:1"})
    error = unsupported(obj, tmp_path)
    assert error.field == "spec.volumes[0].containerDisk.image"
    assert text in error.message and "'example.org/empty:1'" in error.message
    assert not (tmp_path / "state").exists()


def test_container_disk_with_a_backing_file_or_garbage_is_refused(tmp_path):
    disk_dir = container_disk(tmp_path, "chained_1")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                    str(disk_dir / "disk.qcow2")], check=True)
    truncated = container_disk(tmp_path, "broken_1", "disk.qcow2") / "disk.qcow2"
    truncated.write_bytes(truncated.read_bytes()[:104])  # the header says 16M of clusters; they are gone
    for image, text in (("example.org/chained:1", "with a backing file"), ("example.org/broken:1", "is corrupt")):
        error = unsupported(root_disk({"image": image}), tmp_path)
        assert error.field == "spec.volumes[0].containerDisk.image"
        assert text in error.message


def test_container_disk_path_names_the_file_inside_the_image(tmp_path):
    container_disk(tmp_path, "two_1", "a.qcow2", "b.qcow2")
    obj = root_disk({"image": "example.org/two:1", "path": "/disk/b.qcow2"})
    plan = plan_domain(obj, domain_type="qemu", state_dir=tmp_path / "state", images=pulled(tmp_path))
    assert plan.files[0].backing == tmp_path / "images" / "two_1" / "disk" / "b.qcow2"
    obj["spec"]["volumes"][0]["containerDisk"]["path"] = "/disk/c.qcow2"
    error = unsupported(obj, tmp_path)
    assert error.field == "spec.volumes[0].containerDisk.path" and "has no file /disk/c.qcow2" in error.message


@pytest.mark.parametrize("source, field, text", [
    ({"image": ""}, "spec.volumes[0].containerDisk.image", "an image reference is required"),
    ({"image": "a b"}, "spec.volumes[0].containerDisk.image", "an image reference is required"),
    ({"image": "example.org/x:1", "imagePullPolicy": "Sometimes"}, "spec.volumes[0].containerDisk.imagePullPolicy",
     "must be one of Always, IfNotPresent, Never"),
    ({"image": "example.org/x:1", "imagePullSecret": 3}, "spec.volumes[0].containerDisk.imagePullSecret",
     "must be a Secret's name"),
])
def test_image_reference_errors_name_the_field(tmp_path, source, field, text):
    error = unsupported(vmi(volumes=[{"name": "root", "containerDisk": source}]), tmp_path)
    assert error.field == field and text in error.message


def test_container_disk_becomes_an_overlay_and_empty_disk_a_fresh_qcow2(tmp_path):
    image = container_disk(tmp_path, "cirros_0.6", "cirros.qcow2") / "cirros.qcow2"
    before = image.read_bytes()
    obj = vmi(domain__devices__disks=[{"name": "root", "disk": {}, "bootOrder": 1},
                                      {"name": "scratch", "disk": {"bus": "sata"}}],
              volumes=[{"name": "root", "containerDisk": {"image": "example.org/cirros:0.6"}},
                       {"name": "scratch", "emptyDisk": {"capacity": "32Mi"}}])
    state = tmp_path / "state"
    plan = plan_domain(obj, domain_type="qemu", state_dir=state, images=pulled(tmp_path))
    disks = ET.fromstring(plan.xml).findall("devices/disk")
    targets = [(d.find("target").get("dev"), d.find("target").get("bus")) for d in disks]
    assert targets == [("vda", "virtio"), ("sda", "sata")]
    assert disks[0].find("boot").get("order") == "1"
    assert [d.find("driver").get("type") for d in disks] == ["qcow2", "qcow2"]

    prepare_files(plan, state)
    overlay = subprocess.run(["qemu-img", "info", "--output=json", str(state / "disk-root.qcow2")],
                             check=True, capture_output=True, text=True).stdout
    assert str(image) in overlay and '"backing-filename-format": "qcow2"' in overlay
    assert '"virtual-size": 33554432' in subprocess.run(
        ["qemu-img", "info", "--output=json", str(state / "disk-scratch.qcow2")],
        check=True, capture_output=True, text=True).stdout
    assert image.read_bytes() == before


def guest_store(tmp_path: Path) -> dict[str, Path]:
    """The pulled container image example.org/guest:1 with a kernel and an initrd."""
    boot = tmp_path / "images" / "guest_1" / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz").write_bytes(b"kernel")
    (boot / "initrd.img").write_bytes(b"initrd")
    return pulled(tmp_path)


KERNEL_BOOT = {"kernelArgs": "console=ttyS0 virtops.tick=1",
               "container": {"image": "example.org/guest:1", "kernelPath": "/boot/vmlinuz",
                             "initrdPath": "/boot/initrd.img"}}


def test_kernel_boot_copies_kernel_and_initrd_from_the_image_directory(tmp_path):
    images = guest_store(tmp_path)
    state = tmp_path / "state"
    plan = plan_domain(vmi(domain__firmware={"kernelBoot": KERNEL_BOOT}), domain_type="qemu", state_dir=state,
                       images=images)
    os_el = ET.fromstring(plan.xml).find("os")
    assert os_el.findtext("kernel") == str(state / "kernel")
    assert os_el.findtext("initrd") == str(state / "initrd")
    assert os_el.findtext("cmdline") == "console=ttyS0 virtops.tick=1"
    assert not state.exists()  # planning creates nothing
    prepare_files(plan, state)
    assert (state / "kernel").read_bytes() == b"kernel" and (state / "initrd").read_bytes() == b"initrd"
    assert (state / "kernel").stat().st_mode & 0o777 == 0o644


def test_every_domain_has_the_guest_agent_channel(tmp_path):
    channel = xml_of(vmi(), tmp_path).find("devices/channel")
    assert channel.get("type") == "unix"
    assert channel.find("target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}


def test_no_domain_has_a_usb_controller_as_on_kubevirt(tmp_path):
    # Without this element libvirt adds a USB controller, which the guest then probes at boot.
    controllers = [c.attrib for c in xml_of(vmi(), tmp_path).findall("devices/controller")]
    assert controllers == [{"type": "usb", "index": "0", "model": "none"}]


def test_rng_device_is_a_virtio_rng_from_urandom_only_when_asked(tmp_path):
    # KubeVirt's vmi-masquerade asks for `rng: {}`; before, the agent dropped it silently.
    assert xml_of(vmi(), tmp_path).find("devices/rng") is None
    rng = xml_of(vmi(domain__devices={"rng": {}}), tmp_path).find("devices/rng")
    assert rng.get("model") == "virtio"
    assert rng.find("backend").attrib == {"model": "random"} and rng.findtext("backend") == "/dev/urandom"


@pytest.mark.parametrize("kernel_boot, field, text", [
    ({"kernelArgs": "x"}, "spec.domain.firmware.kernelBoot.container", "a container image"),
    ({"container": {"kernelPath": "/boot/vmlinuz"}}, "spec.domain.firmware.kernelBoot.container.image",
     "an image reference is required"),
    ({"container": {"image": "example.org/guest:1"}}, "spec.domain.firmware.kernelBoot.container.kernelPath",
     "a kernel path"),
    ({"container": {"image": "example.org/other:2", "kernelPath": "/boot/vmlinuz"}},
     "spec.domain.firmware.kernelBoot.container.image", "image 'example.org/other:2' is not pulled"),
    ({"container": {"image": "example.org/guest:1", "kernelPath": "/boot/missing"}},
     "spec.domain.firmware.kernelBoot.container.kernelPath", "'/boot/missing' is not in image"),
    ({"container": {"image": "example.org/guest:1", "kernelPath": "boot/vmlinuz"}},
     "spec.domain.firmware.kernelBoot.container.kernelPath", "must be an absolute path"),
    ({"container": {"image": "example.org/guest:1", "kernelPath": "/boot/vmlinuz", "initrdPath": "/../../x"}},
     "spec.domain.firmware.kernelBoot.container.initrdPath", "is not a file path inside the image"),
    ({"kernelArgs": ["a"], "container": {"image": "example.org/guest:1", "kernelPath": "/boot/vmlinuz"}},
     "spec.domain.firmware.kernelBoot.kernelArgs", "must be a string"),
])
def test_kernel_boot_errors_name_the_field(tmp_path, kernel_boot, field, text):
    guest_store(tmp_path)
    error = unsupported(vmi(domain__firmware={"kernelBoot": kernel_boot}), tmp_path)
    assert error.field == field
    assert text in error.message
    assert not (tmp_path / "state").exists()


class Seen:
    def __init__(self, name, mac, ipv4=(), ipv6=()):
        self.name, self.mac, self.ipv4, self.ipv6 = name, mac, tuple(ipv4), tuple(ipv6)


MAC = "52:54:00:12:34:56"


def test_status_interfaces_take_the_addresses_the_guest_agent_reports():
    guest = [Seen("lo", "00:00:00:00:00:00", ["127.0.0.1"]),
             Seen("eth0", MAC.upper(), ["10.0.2.15"], ["fe80::5054:ff:fe12:3456", "fec0::5054:ff:fe12:3456"])]
    assert status_interfaces(["default"], [MAC], guest, []) == [{
        "name": "default", "mac": MAC, "infoSource": "domain, guest-agent", "interfaceName": "eth0",
        "ipAddress": "10.0.2.15", "ipAddresses": ["10.0.2.15", "fec0::5054:ff:fe12:3456"]}]


def test_status_interfaces_without_an_agent_answer_keep_what_was_reported():
    old = [{"name": "default", "mac": MAC, "ipAddress": "10.0.2.15", "ipAddresses": ["10.0.2.15"],
            "interfaceName": "eth0", "infoSource": "domain, guest-agent"}]
    assert status_interfaces(["default"], [MAC], None, old) == old
    # A new domain (another MAC) starts from nothing: no address is guessed.
    assert status_interfaces(["default"], ["52:54:00:aa:bb:cc"], None, old) == [
        {"name": "default", "mac": "52:54:00:aa:bb:cc", "infoSource": "domain"}]


def test_status_interfaces_drop_an_address_the_guest_no_longer_has():
    old = [{"name": "default", "mac": MAC, "ipAddress": "10.0.2.15", "infoSource": "domain, guest-agent"}]
    guest = [Seen("eth0", MAC, [], ["fe80::1"])]
    assert status_interfaces(["default"], [MAC], guest, old) == [
        {"name": "default", "mac": MAC, "infoSource": "domain, guest-agent", "interfaceName": "eth0"}]


def test_efi_without_secure_boot_boots_ovmf_with_a_variable_store_of_the_vmis_own(tmp_path, monkeypatch):
    code, template = tmp_path / "OVMF_CODE_4M.fd", tmp_path / "OVMF_VARS_4M.fd"
    code.write_bytes(b"code")
    template.write_bytes(b"vars")
    monkeypatch.setattr(domain, "OVMF_CODE", code)
    monkeypatch.setattr(domain, "OVMF_VARS", template)
    root = xml_of(vmi(domain__firmware={"bootloader": {"efi": {"secureBoot": False}}}), tmp_path)
    loader, nvram = root.find("os/loader"), root.find("os/nvram")
    assert (loader.text, loader.get("type"), loader.get("readonly"), loader.get("secure")) == \
        (str(code), "pflash", "yes", "no")
    assert nvram.get("template") == str(template)
    assert nvram.text == str(tmp_path / "state" / "nvram.fd")


def test_bios_is_the_default_firmware_and_has_no_loader(tmp_path):
    for firmware in ({}, {"bootloader": {"bios": {}}}):
        root = xml_of(vmi(domain__firmware=firmware), tmp_path)
        assert root.find("os/loader") is None and root.find("os/nvram") is None


@pytest.mark.parametrize("bootloader, field", [
    ({"efi": {}}, "spec.domain.firmware.bootloader.efi.secureBoot"),  # KubeVirt's default: secure boot
    ({"efi": {"secureBoot": True}}, "spec.domain.firmware.bootloader.efi.secureBoot"),
    ({"efi": {"secureBoot": False}, "bios": {}}, "spec.domain.firmware.bootloader"),
])
def test_firmware_this_node_cannot_give_is_refused_naming_the_field(tmp_path, bootloader, field):
    assert unsupported(vmi(domain__firmware={"bootloader": bootloader}), tmp_path).field == field


def test_efi_without_ovmf_on_the_node_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(domain, "OVMF_CODE", tmp_path / "missing.fd")
    error = unsupported(vmi(domain__firmware={"bootloader": {"efi": {"secureBoot": False}}}), tmp_path)
    assert error.field == "spec.domain.firmware.bootloader.efi" and "ovmf" in error.message
