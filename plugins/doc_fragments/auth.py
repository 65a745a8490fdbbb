# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file, or the kubeconfig itself as a dict.
      - When neither O(kubeconfig) nor O(host) is set, C(KUBECONFIG) (several files are merged as kubectl
        does), then C(~/.kube/config), then the in-cluster service account are used.
      - Can also be set with E(K8S_AUTH_KUBECONFIG).
      - Never logged. In the task result, the secrets of a dict (C(client-key-data), C(token), C(password),
        a cluster's C(proxy-url), exec C(env) and C(auth-provider)) are hidden; its other fields are shown.
      - Embedded certificates and keys are loaded into memory; no file of them is left, not even when the
        task is killed.
    type: raw
  context:
    description: Context in the kubeconfig to use. Can also be set with E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description: URL of the API server, for example C(https://127.0.0.1:6443). Can also be set with E(K8S_AUTH_HOST).
    type: str
  api_key:
    description: Bearer token. Can also be set with E(K8S_AUTH_API_KEY).
    type: str
  username:
    description: Basic-auth user. Can also be set with E(K8S_AUTH_USERNAME).
    type: str
  password:
    description: Basic-auth password. Can also be set with E(K8S_AUTH_PASSWORD).
    type: str
  validate_certs:
    description: Verify the API server's certificate. Can also be set with E(K8S_AUTH_VERIFY_SSL).
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description: CA bundle that signed the API server's certificate. Can also be set with E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description: Client certificate file. Can also be set with E(K8S_AUTH_CERT_FILE).
    type: path
    aliases: [cert_file]
  client_key:
    description: Client key file. Can also be set with E(K8S_AUTH_KEY_FILE).
    type: path
    aliases: [key_file]
  proxy:
    description:
      - HTTP proxy URL for the API connection. Can also be set with E(K8S_AUTH_PROXY).
      - Never logged or shown in the task result, since it may carry credentials (C(http://user:password@host:port)).
    type: str
  no_proxy:
    description: Comma-separated hosts that bypass O(proxy). Can also be set with E(K8S_AUTH_NO_PROXY).
    type: str
  impersonate_user:
    description: User to impersonate. Can also be set with E(K8S_AUTH_IMPERSONATE_USER).
    type: str
  impersonate_groups:
    description: Groups to impersonate. Can also be set with E(K8S_AUTH_IMPERSONATE_GROUPS) (comma-separated).
    type: list
    elements: str
notes:
  - Options and environment variables have kubernetes.core's names, so C(module_defaults) and existing
    environments keep working.
  - Secrets (O(api_key), O(password)) are never logged or returned.
"""

    WAIT = r"""
options:
  wait:
    description:
      - Wait, by watching the API, until the VMI reaches O(wait_for).
    type: bool
    default: false
  wait_for:
    description:
      - What to wait for. Default is O(wait_for.phase=Running).
    type: dict
    suboptions:
      phase:
        description: A VMI phase. Waiting for V(Running) fails at once if the VMI reaches V(Succeeded) or V(Failed).
        type: str
        choices: [Pending, Scheduling, Scheduled, Running, Succeeded, Failed, Unknown]
      condition:
        description: A condition type in C(status.conditions), for example V(Ready) or V(Paused).
        type: str
      status:
        description: The condition's status. V(False) is also met when the condition is absent.
        type: str
        default: "True"
        choices: ["True", "False", "Unknown"]
      reason:
        description: The condition's reason, when it matters.
        type: str
  wait_timeout:
    description: Seconds to wait. A timeout fails with the last phase, conditions and events seen.
    type: int
    default: 120
"""

    BATCH = r"""
options:
  concurrency:
    description:
      - How many objects of a batch are applied at the same time (threads, each with its own connection).
      - Before that, what exists is read with one LIST per namespace (narrowed by the labels all the namespace's
        objects share) instead of a GET per object, when a namespace has 5 or more of them; a batch whose objects
        are all as declared then sends that one request. A LIST that RBAC refuses falls back to a GET per object.
    type: int
    default: 8
"""

    DELETE = r"""
options:
  delete_options:
    description:
      - Options for the delete of O(state=absent). The camelCase names of C(kubevirt.core.kubevirt_vm) work too.
    type: dict
    suboptions:
      grace_period_seconds:
        description:
          - Seconds the guest gets to shut down. KubeVirt's default is the VMI's C(terminationGracePeriodSeconds) (30).
        type: int
        aliases: [gracePeriodSeconds]
      propagation_policy:
        description: How dependents (a VM's VMI) are deleted.
        type: str
        choices: [Foreground, Background, Orphan]
        aliases: [propagationPolicy]
      preconditions:
        description: Delete only if the live object still matches.
        type: dict
        suboptions:
          uid:
            description: The object's C(metadata.uid).
            type: str
          resource_version:
            description: The object's C(metadata.resourceVersion).
            type: str
            aliases: [resourceVersion]
"""
