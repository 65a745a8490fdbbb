# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: kubevirt
short_description: KubeVirt VirtualMachines and VirtualMachineInstances as an inventory
version_added: 0.2.0
description:
  - Lists the VirtualMachines (VMs, stopped ones included) and VirtualMachineInstances (VMIs) of a cluster, in all
    namespaces or the given ones, as hosts.
  - Reads a YAML configuration file whose name ends in C(kubevirt.yml) or C(kubevirt.yaml) and whose O(plugin) is
    V(virtops.kubevirt.kubevirt).
  - The options are those of the C(kubevirt.core.kubevirt) inventory plugin, so a configuration switches by changing
    O(plugin); the host variables too (C(vm_*), C(vmi_*), C(ansible_host), C(ansible_port)).
  - Groups - the cluster (O(name)), C(namespace_<namespace>), with O(create_groups) C(label_<key>_<value>), and with
    O(state_groups) C(phase_<phase>) (the VMI's phase, lower case), C(stopped) (a VM without a live VMI),
    C(paused) and C(node_<node>).
  - With O(virtctl_proxy), SSH reaches each guest through the Kubernetes API as C(virtctl ssh) does - no Service and
    no routable address needed, on KubeVirt and on the virtops stack alike.
  - Caching (O(cache)) keeps what was listed; a cached run sends no request at all.
author:
  - virtops.kubevirt maintainers (@virtops)
extends_documentation_fragment:
  - virtops.kubevirt.auth
  - inventory_cache
  - constructed
options:
  plugin:
    description: Marks the file as a source for this plugin.
    required: true
    type: str
    choices: [virtops.kubevirt.kubevirt]
  name:
    description: Name of the cluster's group. Default - the API server's host and port, for example C(127-0-0-1_6443).
    type: str
  host_format:
    description: Inventory host name; the fields are V({name}), V({namespace}) and V({uid}).
    type: str
    default: "{namespace}-{name}"
  namespaces:
    description: Namespaces to list. Default - all, or, without the right to list cluster-wide, each namespace the user can list.
    type: list
    elements: str
  label_selector:
    description: A label selector for the VMs and VMIs, for example V(app=web).
    type: str
  network_name:
    description: The interface (network) whose address is C(ansible_host); default the first.
    type: str
    aliases: [interface_name]
  kube_secondary_dns:
    description: C(ansible_host) is the C(kubesecondarydns) name of O(network_name)'s interface.
    type: bool
    default: false
  use_service:
    description:
      - A C(LoadBalancer) or C(NodePort) Service that selects the VMI's C(kubevirt.io/domain) label and targets port
        22 (or 5985/5986 for Windows) gives C(ansible_host) and C(ansible_port). Only without O(network_name).
    type: bool
    default: true
  unset_ansible_port:
    description: Set C(ansible_port) to null when no Service gives a port, so Ansible's default applies.
    type: bool
    default: true
  create_groups:
    description: Groups C(label_<key>_<value>) from the labels of the VMs and VMIs.
    type: bool
    default: false
  state_groups:
    description: Groups C(phase_<phase>), C(stopped), C(paused) and C(node_<node>).
    type: bool
    default: true
  base_domain:
    description:
      - The cluster's base domain for O(kube_secondary_dns) names and, with O(append_base_domain), node names of
        C(NodePort) Services. Default - OpenShift's C(dnses.config.openshift.io/cluster), when the cluster has it.
    type: str
  append_base_domain:
    description: Append O(base_domain) to the node names of C(NodePort) Services.
    type: bool
    default: false
  api_version:
    description: KubeVirt's API version.
    type: str
    default: kubevirt.io/v1
  virtctl_proxy:
    description:
      - Set C(ansible_ssh_common_args) to a C(ProxyCommand) of C(virtctl port-forward --stdio=true vmi/NAME/NAMESPACE
        PORT), the command C(virtctl ssh --local-ssh) uses, with this source's O(kubeconfig) and O(context), and
        C(ansible_host) to C(vmi.NAME.NAMESPACE), the host name C(virtctl ssh) gives ssh. SSH then goes through the
        API server's C(portforward) subresource.
    type: bool
    default: false
  virtctl_command:
    description: The C(virtctl) executable for O(virtctl_proxy), a name on C(PATH) or a path.
    type: str
    default: virtctl
  virtctl_ssh_port:
    description: The guest's SSH port for O(virtctl_proxy).
    type: int
    default: 22
notes:
  - Every request goes to the API server directly, with the collection's own client (no C(kubernetes) Python client).
  - A VM and its VMI are one host; a VMI without a VM is a host of its own.
"""

EXAMPLES = r"""
# lab.kubevirt.yml: every VM and VMI of the cluster of ~/.kube/config
plugin: virtops.kubevirt.kubevirt
---
# demo.kubevirt.yml: one namespace, label groups, SSH through virtctl, cached for an hour
plugin: virtops.kubevirt.kubevirt
kubeconfig: /etc/virtops/kubeconfig
namespaces: [demo]
create_groups: true
virtctl_proxy: true
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/virtops-inventory
cache_timeout: 3600
compose:
  ansible_user: "'debian'"
keyed_groups:
  - key: vmi_guest_os_info.id | default('unknown')
    prefix: os
"""

import os
import re
import shlex

from ansible.errors import AnsibleParserError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import AUTH_ARG_SPEC
from ansible_collections.virtops.kubevirt.plugins.module_utils.client import KubeClient, resolve_settings
from ansible_collections.virtops.kubevirt.plugins.module_utils.diff import remove_fields
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    ForbiddenError,
    KubeVirtOpsError,
    NotFoundError,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.vm import VM, vmi_is_live
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import VMI
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import find_condition

DOMAIN_LABEL = "kubevirt.io/domain"
SSH_PORT = 22
WINRM_PORTS = (5986, 5985)  # WinRM over HTTPS first
WINDOWS_ANNOTATIONS = ("kubevirt.io/cluster-preference-name", "kubevirt.io/preference-name", "vm.kubevirt.io/os")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake(name):
    return _CAMEL.sub("_", name).lower()


def _env_value(option, spec):
    for name in spec.get("fallback", (None, []))[1]:
        value = os.environ.get(name)
        if value not in (None, ""):
            if spec.get("type") == "bool":
                return boolean(value)
            if spec.get("type") == "list":
                return [v.strip() for v in value.split(",") if v.strip()]
            return value
    return None


def _ssh_service(services, windows):
    ports = WINRM_PORTS if windows else (SSH_PORT,)
    for port in ports:
        for service in services:
            spec_ports = (service.get("spec") or {}).get("ports") or []
            if len(spec_ports) == 1 and spec_ports[0].get("targetPort") == port:
                return service
    return None


def _is_windows(vmi):
    os_id = ((vmi.get("status") or {}).get("guestOSInfo") or {}).get("id")
    if os_id:
        return os_id == "mswindows"
    annotations = vmi["metadata"].get("annotations") or {}
    return any(annotations.get(key, "").startswith("windows") for key in WINDOWS_ANNOTATIONS)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "virtops.kubevirt.kubevirt"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(("kubevirt.yml", "kubevirt.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache")
        results = None
        if use_cache and cache:
            try:
                results = self._cache[cache_key]
            except KeyError:
                results = None
        if results is None:
            try:
                results = self._fetch()
            except KubeVirtOpsError as exc:
                raise AnsibleParserError("{0}: {1}".format(path, exc))
            if use_cache:
                self._cache[cache_key] = results
        self._populate(results)

    # --- reading the cluster ---------------------------------------------------------------------
    def _auth_params(self):
        params = {}
        for option, spec in AUTH_ARG_SPEC.items():
            value = self.get_option(option)
            params[option] = value if value is not None else _env_value(option, spec)
        return params

    def _fetch(self):
        client = KubeClient(resolve_settings(self._auth_params()), user_agent="virtops.kubevirt/inventory")
        api_version = self.get_option("api_version")
        label_selector = self.get_option("label_selector")
        query = {"labelSelector": label_selector}
        wanted = self.get_option("namespaces")
        if wanted:
            scopes = list(wanted)
        else:
            scopes = [None]  # one cluster-wide list of each kind
        try:
            objects = [self._list_scope(client, ns, api_version, query) for ns in scopes]
        except ForbiddenError:
            if wanted:
                raise
            # Without the right to list cluster-wide: each namespace the user can see, as kubevirt.core does.
            names = [n["metadata"]["name"] for n in client.list_all("/api/v1/namespaces")[0]]
            objects = []
            for ns in names:
                try:
                    objects.append(self._list_scope(client, ns, api_version, query))
                except ForbiddenError:
                    continue
        namespaces = {}
        for vms, vmis, services in objects:
            for key, items in (("vms", vms), ("vmis", vmis), ("services", services)):
                for item in items:
                    ns = item["metadata"]["namespace"]
                    namespaces.setdefault(ns, {"vms": [], "vmis": [], "services": []})[key].append(item)
        return {
            "default_name": re.sub(r"^https?://", "", client.host).replace(".", "-").replace(":", "_"),
            "base_domain": self._base_domain(client),
            "namespaces": dict((ns, data) for ns, data in namespaces.items() if data["vms"] or data["vmis"]),
        }

    def _list_scope(self, client, namespace, api_version, query):
        vms = client.list_all(VM.collection_path(namespace, api_version), query)[0]
        vmis = client.list_all(VMI.collection_path(namespace, api_version), query)[0]
        services = []
        if (vms or vmis) and self.get_option("use_service") and not self.get_option("network_name"):
            path = "/api/v1/namespaces/{0}/services".format(namespace) if namespace else "/api/v1/services"
            services = [s for s in client.list_all(path)[0]
                        if (s.get("spec") or {}).get("type") in ("LoadBalancer", "NodePort")
                        and ((s.get("spec") or {}).get("selector") or {}).get(DOMAIN_LABEL)]
        for item in vms + vmis + services:
            remove_fields(item, ["metadata.managedFields"])  # never used, half of what a cache would keep
        return vms, vmis, services

    def _base_domain(self, client):
        if self.get_option("base_domain"):
            return self.get_option("base_domain")
        if not (self.get_option("kube_secondary_dns") or self.get_option("append_base_domain")):
            return None
        try:
            dns = client.get("/apis/config.openshift.io/v1/dnses/cluster")
        except (NotFoundError, ForbiddenError):
            return None
        return (dns.get("spec") or {}).get("baseDomain")

    # --- the inventory -----------------------------------------------------------------------------
    def _populate(self, results):
        # Group names as kubevirt.core makes them: invalid characters (a dash, a leading digit) become "_".
        cluster = self.inventory.add_group(self._sanitize_group_name(self.get_option("name") or results["default_name"]))
        for namespace in sorted(results["namespaces"]):
            data = results["namespaces"][namespace]
            group = self.inventory.add_group(self._sanitize_group_name("namespace_" + namespace))
            self.inventory.add_child(cluster, group)
            vmis = dict((v["metadata"]["name"], v) for v in data["vmis"])
            services = {}
            for service in data["services"]:
                services.setdefault(service["spec"]["selector"][DOMAIN_LABEL], []).append(service)
            vm_names = set()
            for vm in data["vms"]:
                vm_names.add(vm["metadata"]["name"])
                self._add(group, vm, vmis.get(vm["metadata"]["name"]), services, results)
            for name, vmi in sorted(vmis.items()):
                if name not in vm_names:
                    self._add(group, None, vmi, services, results)

    def _add(self, group, vm, vmi, services, results):
        meta = (vm or vmi)["metadata"]
        host = self.get_option("host_format").format(namespace=meta["namespace"], name=meta["name"],
                                                     uid=meta.get("uid", ""))
        self.inventory.add_host(host, group=group)
        for prefix, obj in (("vm", vm), ("vmi", vmi)):
            if obj is not None:
                self._object_vars(host, prefix, obj)
        self._state_groups(host, vm, vmi)
        if vmi is not None:
            self._connection_vars(host, vmi, services, results.get("base_domain"))
        if self.get_option("virtctl_proxy"):
            self._virtctl_vars(host, meta)
        variables = self.inventory.get_host(host).get_vars()
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)

    def _object_vars(self, host, prefix, obj):
        meta = obj["metadata"]
        for key, var in (("annotations", "annotations"), ("labels", "labels"), ("resourceVersion", "resource_version"),
                         ("uid", "uid")):
            if meta.get(key):
                self.inventory.set_variable(host, "{0}_{1}".format(prefix, var), meta[key])
        for key, value in (obj.get("status") or {}).items():
            self.inventory.set_variable(host, "{0}_{1}".format(prefix, snake(key)), value)
        if self.get_option("create_groups"):
            for key, value in (meta.get("labels") or {}).items():
                label_group = self.inventory.add_group(self._sanitize_group_name("label_{0}_{1}".format(key, value)))
                self.inventory.add_child(label_group, host)

    def _state_groups(self, host, vm, vmi):
        if not self.get_option("state_groups"):
            return
        groups = []
        live = vmi_is_live(vmi)
        if vmi is not None and (vmi.get("status") or {}).get("phase"):
            groups.append("phase_" + vmi["status"]["phase"].lower())
        if vm is not None and not live:
            groups.append("stopped")
        cond = find_condition(vmi, "Paused") if vmi is not None else None
        if cond and cond.get("status") == "True":
            groups.append("paused")
        node = ((vmi or {}).get("status") or {}).get("nodeName")
        if node:
            groups.append("node_" + node)
        for name in groups:
            self.inventory.add_child(self.inventory.add_group(self._sanitize_group_name(name)), host)

    def _connection_vars(self, host, vmi, services, base_domain):
        interfaces = (vmi.get("status") or {}).get("interfaces") or []
        network = self.get_option("network_name")
        if network:
            interface = next((i for i in interfaces if i.get("name") == network), None)
        else:
            interface = interfaces[0] if interfaces else None
        if not interface or not interface.get("ipAddress"):
            return
        windows = _is_windows(vmi)
        if windows:
            self.inventory.set_variable(host, "ansible_connection", "winrm")
        ansible_host, ansible_port = interface["ipAddress"], None
        meta = vmi["metadata"]
        service = _ssh_service(services.get((meta.get("labels") or {}).get(DOMAIN_LABEL), []), windows)
        if self.get_option("kube_secondary_dns") and network:
            ansible_host = "{0}.{1}.{2}.vm".format(network, meta["name"], meta["namespace"])
            if base_domain:
                ansible_host += "." + base_domain
        elif self.get_option("use_service") and service and not network:
            spec = service["spec"]
            port = spec["ports"][0]
            if spec["type"] == "LoadBalancer":
                ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [{}]
                found, found_port = ingress[0].get("hostname") or ingress[0].get("ip"), port.get("port")
            else:
                found, found_port = (vmi.get("status") or {}).get("nodeName"), port.get("nodePort")
                if found and self.get_option("append_base_domain") and base_domain:
                    found += "." + base_domain
            if found and found_port:
                ansible_host, ansible_port = found, found_port
        self.inventory.set_variable(host, "ansible_host", ansible_host)
        if ansible_port is not None or self.get_option("unset_ansible_port"):
            self.inventory.set_variable(host, "ansible_port", ansible_port)

    def _virtctl_vars(self, host, meta):
        # As virtctl ssh --local-ssh: ssh's host name vmi.NAME.NAMESPACE, port-forward's target vmi/NAME/NAMESPACE
        # (virtctl 1.7 reads vmi/NAME.NAMESPACE as a VMI named "NAME.NAMESPACE" in the current namespace).
        target = "vmi/{0}/{1}".format(meta["name"], meta["namespace"])
        command = [self.get_option("virtctl_command")]
        kubeconfig = self.get_option("kubeconfig") or _env_value("kubeconfig", AUTH_ARG_SPEC["kubeconfig"])
        if isinstance(kubeconfig, str):
            command += ["--kubeconfig", os.path.expanduser(kubeconfig)]
        context = self.get_option("context") or _env_value("context", AUTH_ARG_SPEC["context"])
        if context:
            command += ["--context", context]
        command += ["port-forward", "--stdio=true", target, str(self.get_option("virtctl_ssh_port"))]
        proxy = " ".join(shlex.quote(part) for part in command)
        self.inventory.set_variable(host, "ansible_host", "vmi.{0}.{1}".format(meta["name"], meta["namespace"]))
        self.inventory.set_variable(host, "ansible_port", None)
        self.inventory.set_variable(host, "ansible_ssh_common_args", "-o ProxyCommand={0}".format(
            shlex.quote(proxy)))
