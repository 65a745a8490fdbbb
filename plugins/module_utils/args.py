# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Argument specs shared by the modules; doc_fragments/ documents the same options."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible.module_utils.basic import env_fallback

from ansible_collections.virtops.kubevirt.plugins.module_utils.batch import DEFAULT_CONCURRENCY


def _env(*names):
    return (env_fallback, list(names))


# kubernetes.core's names and K8S_AUTH_* variables, so module_defaults and existing
# environments keep working when users switch.
AUTH_ARG_SPEC = dict(
    kubeconfig=dict(type="raw", no_log=True, fallback=_env("K8S_AUTH_KUBECONFIG")),
    context=dict(type="str", fallback=_env("K8S_AUTH_CONTEXT")),
    host=dict(type="str", fallback=_env("K8S_AUTH_HOST")),
    api_key=dict(type="str", no_log=True, fallback=_env("K8S_AUTH_API_KEY")),
    username=dict(type="str", fallback=_env("K8S_AUTH_USERNAME")),
    password=dict(type="str", no_log=True, fallback=_env("K8S_AUTH_PASSWORD")),
    validate_certs=dict(type="bool", aliases=["verify_ssl"], fallback=_env("K8S_AUTH_VERIFY_SSL")),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"], fallback=_env("K8S_AUTH_SSL_CA_CERT")),
    client_cert=dict(type="path", aliases=["cert_file"], fallback=_env("K8S_AUTH_CERT_FILE")),
    client_key=dict(type="path", aliases=["key_file"], no_log=False, fallback=_env("K8S_AUTH_KEY_FILE")),
    proxy=dict(type="str", no_log=True, fallback=_env("K8S_AUTH_PROXY")),  # http://user:password@host
    no_proxy=dict(type="str", fallback=_env("K8S_AUTH_NO_PROXY")),
    impersonate_user=dict(type="str", fallback=_env("K8S_AUTH_IMPERSONATE_USER")),
    impersonate_groups=dict(type="list", elements="str", fallback=_env("K8S_AUTH_IMPERSONATE_GROUPS")),
)

WAIT_FOR_SPEC = dict(
    type="dict",
    options=dict(
        phase=dict(
            type="str",
            choices=["Pending", "Scheduling", "Scheduled", "Running", "Succeeded", "Failed", "Unknown"],
        ),
        condition=dict(type="str"),
        status=dict(type="str", default="True", choices=["True", "False", "Unknown"]),
        reason=dict(type="str"),
    ),
    mutually_exclusive=[["phase", "condition"]],
)

WAIT_ARG_SPEC = dict(
    wait=dict(type="bool", default=False),
    wait_for=WAIT_FOR_SPEC,
    wait_timeout=dict(type="int", default=120),
)


DELETE_ARG_SPEC = dict(
    delete_options=dict(type="dict", options=dict(
        grace_period_seconds=dict(type="int", aliases=["gracePeriodSeconds"]),
        propagation_policy=dict(type="str", choices=["Foreground", "Background", "Orphan"],
                                aliases=["propagationPolicy"]),
        preconditions=dict(type="dict", options=dict(
            uid=dict(type="str"), resource_version=dict(type="str", aliases=["resourceVersion"]))),
    )),
)

# A batch (several objects in one task); doc: the BATCH fragment.
BATCH_ARG_SPEC = dict(concurrency=dict(type="int", default=DEFAULT_CONCURRENCY))

# The options every info module has (kubevirt.core's names); doc: each module documents them for its kind.
INFO_ARG_SPEC = dict(
    name=dict(type="str"),
    namespace=dict(type="str"),
    label_selectors=dict(type="list", elements="str", default=[]),
    field_selectors=dict(type="list", elements="str", default=[]),
)


def delete_spec():
    return copy.deepcopy(DELETE_ARG_SPEC)


def batch_spec():
    return copy.deepcopy(BATCH_ARG_SPEC)


def info_spec():
    return copy.deepcopy(INFO_ARG_SPEC)


def auth_spec():
    return copy.deepcopy(AUTH_ARG_SPEC)


def wait_spec(default_wait=False):
    spec = copy.deepcopy(WAIT_ARG_SPEC)
    spec["wait"]["default"] = default_wait
    return spec


# What in a kubeconfig is secret (kubectl config view redacts the same), and a cluster's proxy-url, which may
# carry credentials like the proxy option. Every string under these keys stays hidden in the module's output.
KUBECONFIG_SECRET_KEYS = ("client-key-data", "token", "password", "proxy-url", "env", "auth-provider")


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, bool) or value is None:
        return
    elif value != "":
        yield str(value)


def _kubeconfig_secrets(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from (_strings(item) if key in KUBECONFIG_SECRET_KEYS else _kubeconfig_secrets(item))
    elif isinstance(value, list):
        for item in value:
            yield from _kubeconfig_secrets(item)


def hide_only_kubeconfig_secrets(module):
    """Keep Ansible from masking the non-secret parts of the kubeconfig option in the module's output.

    ``kubeconfig`` is no_log, so Ansible never logs it (its invocation log says NOT_LOGGING_PARAMETER). But
    Ansible then also replaces every string of the dict wherever it appears in the output: ``v1`` in
    ``kubevirt.io/v1``, a user or cluster name inside a VMI's name, the path of a kubeconfig file. Only the
    secrets (KUBECONFIG_SECRET_KEYS, and the values of the other no_log options) stay hidden.
    """
    kubeconfig = module.params.get("kubeconfig")
    if not kubeconfig:
        return
    keep = set(_kubeconfig_secrets(kubeconfig))
    for name, spec in module.argument_spec.items():
        if name != "kubeconfig" and spec.get("no_log"):
            keep.update(_strings(module.params.get(name)))
    module.no_log_values.difference_update(set(_strings(kubeconfig)) - keep)


def auth_params(params):
    return dict((k, params.get(k)) for k in AUTH_ARG_SPEC)
