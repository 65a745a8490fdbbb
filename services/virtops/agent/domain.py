"""A VMI spec -> libvirt domain XML, and the node-local files its disks need.

Container images (``spec.volumes[N].containerDisk.image``, ``spec.domain.firmware.kernelBoot.container.image``)
are pulled by the agent into the node's image cache first (``virtops.agent.images``); ``plan_domain`` gets
``images``, each reference's unpacked file system. A containerDisk's disk (the single file under ``/disk/``,
or ``path``) becomes the backing file of a qcow2 overlay in the VMI's state directory, so it is never
modified; a kernel boot's ``kernelPath``/``initrdPath`` are copied into the VMI's state directory (as
KubeVirt copies them out of the container into the pod), so libvirt's relabelling never touches the cache.

Every domain gets the virtio-serial channel ``org.qemu.guest_agent.0`` (as KubeVirt adds it): a guest agent
behind it tells libvirt the guest's addresses.

Networking is qemu user-mode only (KubeVirt's masquerade/slirp meaning); never a libvirt network or bridge.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from virtops.agent.cloudinit import CloudInitDisk, ReadSecret, cloud_init_disk, cloud_init_volumes, write_iso
from virtops.agent.errors import UnsupportedSpecError
from virtops.agent.images import PULL_POLICIES, BadImageError, default_pull_policy, disk_file, disk_format
from virtops.quantity import parse_quantity

METADATA_NS = "https://virtops.dev/agent"
METADATA_PREFIX = "virtops"

_MACHINE = re.compile(r"^(q35|pc|pc-q35-[0-9.]+|pc-i440fx-[0-9.]+)$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
_BUSES = {"virtio": "vd", "sata": "sd", "scsi": "sd"}
_TARGET_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# The largest virtual size of a qcow2 image with qemu's default 64 KiB clusters (qemu-img refuses 2Pi + 1 byte).
MAX_EMPTY_DISK_BYTES = 2**51
_SUPPORTED_VOLUMES = ("containerDisk", "emptyDisk", "cloudInitNoCloud", "cloudInitConfigDrive")
_UNSUPPORTED_DEVICES = ("gpus", "hostDevices", "filesystems", "watchdog", "tpm")
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
_KERNEL_BOOT = "spec.domain.firmware.kernelBoot"
_BOOTLOADER = "spec.domain.firmware.bootloader"
# Debian's ovmf package: the UEFI firmware (read-only) and the template of each VMI's own variable store.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def domain_name(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


@dataclass(frozen=True)
class ImageRequest:
    """A container image a VMI needs on the node: where the spec names it, and how to pull it."""

    field: str  # e.g. spec.volumes[0].containerDisk.image
    image: str
    pull_policy: str
    pull_secret: str | None


def image_requests(spec: dict[str, Any]) -> list[ImageRequest]:
    """Every container image of the spec (containerDisks, then the kernel boot image), checked for shape."""
    sources: list[tuple[str, Any]] = []
    for i, volume in enumerate(spec.get("volumes") or []):
        if "containerDisk" in volume:
            sources.append((f"spec.volumes[{i}].containerDisk", volume["containerDisk"]))
    boot = ((spec.get("domain") or {}).get("firmware") or {}).get("kernelBoot") or {}
    if boot.get("container"):
        sources.append((f"{_KERNEL_BOOT}.container", boot["container"]))
    requests = []
    for where, source in sources:
        source = source if isinstance(source, dict) else {}
        image = source.get("image")
        if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
            raise UnsupportedSpecError(f"{where}.image", f"an image reference is required, not {image!r}")
        policy = source.get("imagePullPolicy") or default_pull_policy(image)
        if policy not in PULL_POLICIES:
            raise UnsupportedSpecError(f"{where}.imagePullPolicy",
                                       f"must be one of {', '.join(PULL_POLICIES)}, not {policy!r}")
        secret = source.get("imagePullSecret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise UnsupportedSpecError(f"{where}.imagePullSecret", f"must be a Secret's name, not {secret!r}")
        requests.append(ImageRequest(f"{where}.image", image, policy, secret))
    return requests


@dataclass
class DiskFile:
    """A file the domain needs before it starts: an overlay on an image, an empty disk, a copy
    (``copy_of``: a kernel boot's kernel or initrd), or a cloud-init ISO (``cloud_init``)."""

    path: Path
    backing: Path | None = None
    backing_format: str = "qcow2"
    size_bytes: int = 0
    copy_of: Path | None = None
    cloud_init: CloudInitDisk | None = None


@dataclass
class KernelBoot:
    kernel: Path
    initrd: Path | None
    cmdline: str
    files: list[DiskFile]


@dataclass
class DomainPlan:
    name: str
    xml: str
    files: list[DiskFile] = field(default_factory=list)


def _memory_bytes(spec: dict[str, Any]) -> int:
    domain = spec.get("domain") or {}
    resources = domain.get("resources") or {}
    for field_path, value in (
        ("spec.domain.memory.guest", (domain.get("memory") or {}).get("guest")),
        ("spec.domain.resources.requests.memory", (resources.get("requests") or {}).get("memory")),
        ("spec.domain.resources.limits.memory", (resources.get("limits") or {}).get("memory")),
    ):
        if value in (None, ""):
            continue
        try:
            amount = parse_quantity(value)
        except ValueError as exc:
            raise UnsupportedSpecError(field_path, str(exc)) from None
        if amount < 2**20:
            raise UnsupportedSpecError(field_path, f"{value} is less than 1Mi")
        return int(amount.to_integral_value(ROUND_CEILING))
    raise UnsupportedSpecError("spec.domain.resources.requests.memory",
                               "a memory size is required (or spec.domain.memory.guest)")


def _cpu(spec: dict[str, Any]) -> tuple[int, int, int]:
    cpu = (spec.get("domain") or {}).get("cpu") or {}
    counts = []
    for key in ("sockets", "cores", "threads"):
        value = cpu.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UnsupportedSpecError(f"spec.domain.cpu.{key}", f"must be a positive integer, not {value!r}")
        counts.append(value)
    return counts[0], counts[1], counts[2]


def _boot_order(device: dict[str, Any], field_path: str) -> int | None:
    """A device's bootOrder: None, or a whole number from 1 (KubeVirt's validation)."""
    order = device.get("bootOrder")
    if order is None:
        return None
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise UnsupportedSpecError(field_path, f"must be a whole number from 1, not {order!r}")
    return order


def _interfaces(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The user-mode interfaces: [{name, mac, model, boot}]; the pod network is qemu's own 10.0.2.0/24."""
    devices = (spec.get("domain") or {}).get("devices") or {}
    interfaces = devices.get("interfaces")
    networks = spec.get("networks")
    if interfaces is None and networks is None:
        if devices.get("autoattachPodInterface") is False:
            return []
        # KubeVirt's defaulting: one masquerade interface on the pod network.
        return [{"name": "default", "mac": None, "model": "virtio", "boot": None}]
    networks_by_name: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, net in enumerate(networks or []):
        if "pod" not in net:
            kind = next((k for k in net if k != "name"), "?")
            raise UnsupportedSpecError(f"spec.networks[{i}].{kind}", "only the pod network is supported on this node")
        networks_by_name[net.get("name", "")] = (i, net)
    result = []
    for i, iface in enumerate(interfaces or []):
        name = iface.get("name", "")
        if name not in networks_by_name:
            raise UnsupportedSpecError(f"spec.domain.devices.interfaces[{i}].name",
                                       f"no network named {name!r} in spec.networks")
        binding = [k for k in iface if k not in ("name", "macAddress", "model", "ports", "pciAddress", "bootOrder")]
        for kind in binding:
            if kind not in ("masquerade", "slirp"):
                raise UnsupportedSpecError(
                    f"spec.domain.devices.interfaces[{i}].{kind}",
                    f"binding {kind!r} is not supported; use masquerade or slirp (qemu user-mode networking)")
        model = iface.get("model", "virtio")
        if model not in ("virtio", "e1000", "e1000e", "rtl8139"):
            raise UnsupportedSpecError(f"spec.domain.devices.interfaces[{i}].model", f"model {model!r} is unknown")
        mac = iface.get("macAddress")
        if mac and not _MAC.match(mac):
            raise UnsupportedSpecError(f"spec.domain.devices.interfaces[{i}].macAddress", f"{mac!r} is not a MAC")
        result.append({"name": name, "mac": mac.replace("-", ":").lower() if mac else None, "model": model,
                       "boot": _boot_order(iface, f"spec.domain.devices.interfaces[{i}].bootOrder")})
    return result


def _image_path(image_dir: Path, value: Any, field_path: str, image: str) -> Path:
    """A path inside a container image's directory; absolute, and never outside it."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise UnsupportedSpecError(field_path, f"must be an absolute path inside the image, not {value!r}")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsupportedSpecError(field_path, f"{value!r} is not a file path inside the image")
    path = image_dir.joinpath(*parts)
    if not path.is_file():
        raise UnsupportedSpecError(field_path, f"{value!r} is not in image {image!r} (looked for {path})")
    return path


def _kernel_boot(spec: dict[str, Any], state_dir: Path, images: dict[str, Path]) -> KernelBoot | None:
    """KubeVirt's spec.domain.firmware.kernelBoot: kernel and initrd from a pulled container image."""
    boot = ((spec.get("domain") or {}).get("firmware") or {}).get("kernelBoot")
    if not boot:
        return None
    container = boot.get("container")
    if not container:
        raise UnsupportedSpecError(f"{_KERNEL_BOOT}.container",
                                   "a container image holding the kernel (and initrd) is required")
    args = boot.get("kernelArgs", "")
    if not isinstance(args, str):
        raise UnsupportedSpecError(f"{_KERNEL_BOOT}.kernelArgs", f"must be a string, not {args!r}")
    image = container.get("image")
    if not isinstance(image, str) or not image:
        raise UnsupportedSpecError(f"{_KERNEL_BOOT}.container.image", "an image reference is required")
    if not container.get("kernelPath"):
        raise UnsupportedSpecError(f"{_KERNEL_BOOT}.container.kernelPath",
                                   "a kernel path inside the image is required on this node")
    image_dir = _pulled(images, image, f"{_KERNEL_BOOT}.container.image")
    kernel = _image_path(image_dir, container["kernelPath"], f"{_KERNEL_BOOT}.container.kernelPath", image)
    files = [DiskFile(path=state_dir / "kernel", copy_of=kernel)]
    initrd = None
    if container.get("initrdPath"):
        source = _image_path(image_dir, container["initrdPath"], f"{_KERNEL_BOOT}.container.initrdPath", image)
        initrd = state_dir / "initrd"
        files.append(DiskFile(path=initrd, copy_of=source))
    return KernelBoot(kernel=state_dir / "kernel", initrd=initrd, cmdline=args, files=files)


@dataclass
class Firmware:
    """UEFI for a VMI: OVMF's code and a variable store of the VMI's own (libvirt copies the template)."""

    loader: Path
    nvram: Path
    template: Path


def _bootloader(spec: dict[str, Any], state_dir: Path) -> Firmware | None:
    """KubeVirt's spec.domain.firmware.bootloader: bios (the default, SeaBIOS) or efi (OVMF, no secure boot)."""
    bootloader = ((spec.get("domain") or {}).get("firmware") or {}).get("bootloader") or {}
    if "bios" in bootloader and "efi" in bootloader:
        raise UnsupportedSpecError(_BOOTLOADER, "set either bios or efi, not both")
    if "efi" not in bootloader:
        return None
    efi = bootloader["efi"] or {}
    if efi.get("secureBoot", True):  # KubeVirt's default for efi is secure boot
        raise UnsupportedSpecError(f"{_BOOTLOADER}.efi.secureBoot", "secure boot is not supported on this node "
                                   "(set secureBoot: false for UEFI without it)")
    if not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        raise UnsupportedSpecError(f"{_BOOTLOADER}.efi", f"UEFI firmware is not installed on this node "
                                   f"({OVMF_CODE} from Debian's ovmf package)")
    return Firmware(loader=OVMF_CODE, nvram=state_dir / "nvram.fd", template=OVMF_VARS)


def _pulled(images: dict[str, Path], image: str, field_path: str) -> Path:
    rootfs = images.get(image)
    if rootfs is None or not rootfs.is_dir():
        raise UnsupportedSpecError(field_path, f"image {image!r} is not pulled on this node")
    return rootfs


def _disks(vmi: dict[str, Any], state_dir: Path,
           images: dict[str, Path]) -> tuple[list[dict[str, Any]], list[DiskFile]]:
    spec = vmi.get("spec") or {}
    volumes = spec.get("volumes") or []
    by_name: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, volume in enumerate(volumes):
        kinds = [k for k in volume if k != "name"]
        for kind in kinds:
            if kind not in _SUPPORTED_VOLUMES:
                raise UnsupportedSpecError(f"spec.volumes[{i}].{kind}", f"volume type {kind!r} is not supported "
                                           f"on this node (supported: {', '.join(_SUPPORTED_VOLUMES)})")
        by_name[volume.get("name", "")] = (i, volume)
    devices = (spec.get("domain") or {}).get("devices") or {}
    cloud_init_names = {(volumes[found[0]] or {}).get("name", "") for found in cloud_init_volumes(spec)}
    disks: list[dict[str, Any]] = []
    files: list[DiskFile] = []
    used: dict[str, int] = {}
    for d, disk in enumerate(devices.get("disks") or []):
        name = disk.get("name", "")
        if name not in by_name:
            raise UnsupportedSpecError(f"spec.domain.devices.disks[{d}].name", f"no volume named {name!r}")
        v, volume = by_name[name]
        kind = next((k for k in ("disk", "cdrom", "lun") if k in disk), "disk")
        is_cloud_init = name in cloud_init_names
        if kind != "disk" and not (kind == "cdrom" and is_cloud_init):
            raise UnsupportedSpecError(f"spec.domain.devices.disks[{d}].{kind}", f"{kind} disks are not supported"
                                       + (" (a cdrom only for a cloud-init volume)" if kind == "cdrom" else ""))
        bus = (disk.get(kind) or {}).get("bus", "sata" if kind == "cdrom" else "virtio")
        if bus not in _BUSES or (kind == "cdrom" and bus == "virtio"):
            raise UnsupportedSpecError(f"spec.domain.devices.disks[{d}].{kind}.bus", f"bus {bus!r} is not supported"
                                       + (" for a cdrom (sata or scsi)" if kind == "cdrom" else ""))
        prefix = _BUSES[bus]
        index = used.get(prefix, 0)
        used[prefix] = index + 1
        if index >= len(_TARGET_LETTERS):
            raise UnsupportedSpecError(f"spec.domain.devices.disks[{d}]",
                                       f"bus {bus!r} would make this the disk {index + 1} named {prefix}*; at most "
                                       f"{len(_TARGET_LETTERS)} ({prefix}a to {prefix}z) are supported on this node")
        target = prefix + _TARGET_LETTERS[index]
        boot = _boot_order(disk, f"spec.domain.devices.disks[{d}].bootOrder")
        path = state_dir / f"disk-{name}.qcow2"
        if is_cloud_init:  # its path comes with the cloud-init disk, below
            disks.append({"path": None, "bus": bus, "target": target, "boot": boot,
                          "format": "raw", "device": kind, "cloud_init": name})
            continue
        if "containerDisk" in volume:
            source = volume["containerDisk"] or {}
            image = source.get("image", "")
            field_path = f"spec.volumes[{v}].containerDisk.image"
            rootfs = _pulled(images, image, field_path)
            try:
                found = disk_file(rootfs, source.get("path"))
            except BadImageError as exc:
                raise UnsupportedSpecError(f"spec.volumes[{v}].containerDisk.path" if source.get("path")
                                           else field_path, f"image {image!r}: {exc}") from None
            try:
                fmt = disk_format(found)
            except BadImageError as exc:
                raise UnsupportedSpecError(field_path, f"image {image!r}: {exc}") from None
            files.append(DiskFile(path=path, backing=found, backing_format=fmt))
        else:
            capacity = (volume["emptyDisk"] or {}).get("capacity")
            try:
                size = parse_quantity(capacity) if capacity is not None else Decimal(0)
            except ValueError as exc:
                raise UnsupportedSpecError(f"spec.volumes[{v}].emptyDisk.capacity", str(exc)) from None
            if size <= 0:
                raise UnsupportedSpecError(f"spec.volumes[{v}].emptyDisk.capacity", "a positive capacity is required")
            if size > MAX_EMPTY_DISK_BYTES:
                raise UnsupportedSpecError(f"spec.volumes[{v}].emptyDisk.capacity",
                                           f"{capacity} is larger than a qcow2 disk can be (at most 2Pi)")
            files.append(DiskFile(path=path, size_bytes=int(size.to_integral_value(ROUND_CEILING))))
        disks.append({"path": path, "bus": bus, "target": target, "boot": boot,
                      "format": "qcow2", "device": "disk"})
    named = {disk.get("name", "") for disk in devices.get("disks") or []}
    for name, (v, _volume) in by_name.items():
        if name not in named and name not in cloud_init_names:  # KubeVirt makes no ISO for an unused cloud-init one
            # KubeVirt's defaulting gives such a volume a disk (roles/cluster/files/admission/vmi-defaults.yaml);
            # never run a VMI without the disk its user asked for.
            raise UnsupportedSpecError(f"spec.volumes[{v}]", f"no disk in spec.domain.devices.disks uses volume "
                                       f"{name!r} (KubeVirt's defaulting adds one: install the cluster role's "
                                       "vmi-defaults admission policy, or add the disk)")
    return disks, files


def _unique_boot_orders(spec: dict[str, Any]) -> None:
    """No two devices with the same bootOrder (KubeVirt's validation); values were checked by _boot_order."""
    devices = (spec.get("domain") or {}).get("devices") or {}
    seen: dict[int, str] = {}
    for kind in ("disks", "interfaces"):
        for i, device in enumerate(devices.get(kind) or []):
            order = device.get("bootOrder")
            if order is None:
                continue
            field_path = f"spec.domain.devices.{kind}[{i}].bootOrder"
            if order in seen:
                raise UnsupportedSpecError(field_path, f"boot order {order} is already set for {seen[order]}")
            seen[order] = f"spec.domain.devices.{kind}[{i}]"


def _cloud_init(vmi: dict[str, Any], disks: list[dict[str, Any]], files: list[DiskFile], state_dir: Path,
                read_secret: ReadSecret | None) -> None:
    """The cloud-init ISO and its disks' path. Called once every other field passed: a Secret is read last."""
    cloud_init = cloud_init_disk(vmi, state_dir, read_secret)
    if cloud_init is None:
        return
    attached = [d for d in disks if d.get("cloud_init") == cloud_init.volume]
    for disk in attached:
        disk["path"] = cloud_init.path
    if attached:  # KubeVirt, too, makes no ISO for a cloud-init volume without a disk
        files.append(DiskFile(path=cloud_init.path, cloud_init=cloud_init))


def plan_domain(vmi: dict[str, Any], *, domain_type: str, state_dir: Path, images: dict[str, Path] | None = None,
                node_name: str | None = None, read_secret: ReadSecret | None = None) -> DomainPlan:
    """Validate the whole spec first (nothing is created), then describe the domain and its files.

    ``node_name`` goes into the metadata marker (default: status.nodeName); an agent only touches
    domains whose marker names its node. ``read_secret`` reads the Secrets a cloud-init volume names.
    """
    meta = vmi.get("metadata") or {}
    spec = vmi.get("spec") or {}
    name = domain_name(meta.get("namespace", ""), meta.get("name", ""))
    for key in _UNSUPPORTED_DEVICES:
        if ((spec.get("domain") or {}).get("devices") or {}).get(key):
            raise UnsupportedSpecError(f"spec.domain.devices.{key}", f"{key} are not supported on this node")
    memory = _memory_bytes(spec)
    sockets, cores, threads = _cpu(spec)
    machine = ((spec.get("domain") or {}).get("machine") or {}).get("type") or "q35"
    if not _MACHINE.match(machine):
        raise UnsupportedSpecError("spec.domain.machine.type", f"machine type {machine!r} is not supported "
                                   "(q35, pc, pc-q35-*, pc-i440fx-*)")
    interfaces = _interfaces(spec)
    image_requests(spec)  # the shape of every image reference, before anything else is looked at
    disks, files = _disks(vmi, state_dir, images or {})
    kernel_boot = _kernel_boot(spec, state_dir, images or {})
    firmware = _bootloader(spec, state_dir)
    if kernel_boot is not None:
        files = kernel_boot.files + files
    _cloud_init(vmi, disks, files, state_dir, read_secret)
    _unique_boot_orders(spec)

    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = name
    if meta.get("uid"):
        ET.SubElement(root, "uuid").text = meta["uid"]
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{METADATA_NS}}}vmi", namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                  uid=meta.get("uid", ""),
                  node=node_name or (vmi.get("status") or {}).get("nodeName") or "")
    ET.SubElement(root, "memory", unit="KiB").text = str(-(-memory // 1024))
    ET.SubElement(root, "vcpu", placement="static").text = str(sockets * cores * threads)
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine=machine).text = "hvm"
    if firmware is not None:
        ET.SubElement(os_el, "loader", readonly="yes", secure="no", type="pflash").text = str(firmware.loader)
        ET.SubElement(os_el, "nvram", template=str(firmware.template)).text = str(firmware.nvram)
    if kernel_boot is not None:
        ET.SubElement(os_el, "kernel").text = str(kernel_boot.kernel)
        if kernel_boot.initrd is not None:
            ET.SubElement(os_el, "initrd").text = str(kernel_boot.initrd)
        if kernel_boot.cmdline:
            ET.SubElement(os_el, "cmdline").text = kernel_boot.cmdline
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    cpu = ET.SubElement(root, "cpu")
    ET.SubElement(cpu, "topology", sockets=str(sockets), dies="1", cores=str(cores), threads=str(threads))
    ET.SubElement(root, "on_poweroff").text = "destroy"
    ET.SubElement(root, "on_reboot").text = "restart"
    ET.SubElement(root, "on_crash").text = "destroy"
    devices = ET.SubElement(root, "devices")
    for disk in disks:
        el = ET.SubElement(devices, "disk", type="file", device=disk["device"])
        ET.SubElement(el, "driver", name="qemu", type=disk["format"])
        ET.SubElement(el, "source", file=str(disk["path"]))
        ET.SubElement(el, "target", dev=disk["target"], bus=disk["bus"])
        if disk["device"] == "cdrom":
            ET.SubElement(el, "readonly")
        if disk["boot"]:
            ET.SubElement(el, "boot", order=str(disk["boot"]))
    for iface in interfaces:
        el = ET.SubElement(devices, "interface", type="user")
        if iface["mac"]:
            ET.SubElement(el, "mac", address=iface["mac"])
        ET.SubElement(el, "model", type=iface["model"])
        if iface["boot"]:
            ET.SubElement(el, "boot", order=str(iface["boot"]))
        else:
            # As KubeVirt's virt-launcher writes it: no option ROM on a NIC that is not a boot device. Under TCG
            # its iPXE costs a diskless guest ~3 CPU seconds (DHCP, then PXE timeouts), SeaBIOS alone ~0.5.
            ET.SubElement(el, "rom", enabled="no")
        ET.SubElement(el, "alias", name="ua-" + re.sub(r"[^A-Za-z0-9_-]", "-", iface["name"]))
    # The serial console is a unix socket (libvirt creates it) that the node API attaches `virtctl console`
    # to, and virtlogd still writes everything the guest prints to serial.log.
    serial = ET.SubElement(devices, "serial", type="unix")
    ET.SubElement(serial, "source", mode="bind", path=str(state_dir / "serial.sock"))
    ET.SubElement(serial, "log", file=str(state_dir / "serial.log"), append="on")
    ET.SubElement(serial, "target", port="0")
    # VNC on a unix socket of libvirt's choosing (qemu creates it where it may), for `virtctl vnc`.
    graphics = ET.SubElement(devices, "graphics", type="vnc")
    ET.SubElement(graphics, "listen", type="socket")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "source", mode="bind")  # libvirt picks the socket path
    ET.SubElement(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    # No USB controller, as KubeVirt's virt-launcher writes it unless a USB device is asked for (none is
    # supported here): libvirt would add one, and probing it costs a guest seconds of boot under TCG.
    ET.SubElement(devices, "controller", type="usb", index="0", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    if "rng" in ((spec.get("domain") or {}).get("devices") or {}):
        # devices.rng ({} asks for one): a virtio-rng fed from the host's /dev/urandom, as virt-launcher writes it.
        rng = ET.SubElement(devices, "rng", model="virtio")
        ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    ET.indent(root)
    return DomainPlan(name=name, xml=ET.tostring(root, encoding="unicode"), files=files)


def domain_xml(vmi: dict[str, Any], *, domain_type: str, state_dir: Path, images: dict[str, Path] | None = None,
               node_name: str | None = None, read_secret: ReadSecret | None = None) -> str:
    """The libvirt domain XML of a VMI; raises UnsupportedSpecError naming the field at fault."""
    return plan_domain(vmi, domain_type=domain_type, state_dir=state_dir, images=images,
                       node_name=node_name, read_secret=read_secret).xml


def interface_names(vmi: dict[str, Any]) -> list[str]:
    """The VMI's interface names in the order their <interface> elements appear in the domain."""
    return [i["name"] for i in _interfaces(vmi.get("spec") or {})]


def _guest_address(addresses: list[str]) -> list[str]:
    """Addresses worth showing: link-local IPv6 (fe80::/10) is on every interface and says nothing."""
    return [a for a in addresses if not a.lower().startswith(("fe8", "fe9", "fea", "feb"))]


def status_interfaces(names: list[str], macs: list[str], guest: list[Any] | None,
                      old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """status.interfaces as KubeVirt writes them: the domain's interfaces, with the guest agent's view.

    ``guest`` is what the guest agent reported (objects with name, mac, ipv4, ipv6), or None when it did
    not answer (not booted yet, paused, no agent): then addresses reported before are kept. An interface
    the guest reports without an address loses it. Nothing is guessed: qemu's DHCP server would hand out
    10.0.2.15, but only an address the guest says it has is shown.
    """
    by_mac = {g.mac.lower(): g for g in guest or []}
    previous = {i.get("name"): i for i in old}
    result = []
    for name, mac in zip(names, macs, strict=False):
        entry: dict[str, Any] = {"name": name, "mac": mac, "infoSource": "domain"}
        seen = by_mac.get(mac.lower())
        if seen is not None:
            addresses = _guest_address([*seen.ipv4, *seen.ipv6])
            entry.update(interfaceName=seen.name, infoSource="domain, guest-agent")
            if addresses:
                entry.update(ipAddress=addresses[0], ipAddresses=addresses)
        elif guest is None:
            kept = previous.get(name) or {}
            for key in ("ipAddress", "ipAddresses", "interfaceName", "infoSource"):
                if key in kept and kept.get("mac") == mac:
                    entry[key] = kept[key]
        result.append(entry)
    return result


def prepare_files(plan: DomainPlan, state_dir: Path) -> None:
    """Create the overlays and empty disks that do not exist yet (an adopted domain keeps its own)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # qemu runs as its own user under qemu:///system
    for disk in plan.files:
        if disk.path.exists():
            continue
        if disk.cloud_init is not None:
            write_iso(disk.cloud_init)
            continue
        if disk.copy_of is not None:
            tmp = disk.path.with_name(disk.path.name + ".tmp")
            shutil.copyfile(disk.copy_of, tmp)
            tmp.chmod(0o644)
            tmp.rename(disk.path)
            continue
        if disk.backing is not None:
            cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk.backing_format,
                   "-b", str(disk.backing), str(disk.path)]
        else:
            cmd = ["qemu-img", "create", "-q", "-f", "qcow2", str(disk.path), str(disk.size_bytes)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
