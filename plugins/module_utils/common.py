# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""What every module's main() does around its service: dependencies, client, errors."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import auth_params, hide_only_kubeconfig_secrets
from ansible_collections.virtops.kubevirt.plugins.module_utils.client import (
    HAS_URLLIB3,
    HAS_YAML,
    URLLIB3_IMPORT_ERROR,
    KubeClient,
    resolve_settings,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    BatchError,
    KubeVirtOpsError,
    WaitTimeoutError,
)


def check_requirements(module):
    if not HAS_URLLIB3:
        module.fail_json(msg=missing_required_lib("urllib3"), exception=str(URLLIB3_IMPORT_ERROR))
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"))


def client_for(module, connections=None):
    """A KubeClient from the module's auth options (settings errors name the option)."""
    settings = resolve_settings(auth_params(module.params))
    extra = {"max_connections": connections} if connections else {}
    return KubeClient(settings, user_agent="virtops.kubevirt/" + module._name.split(".")[-1], **extra)


def check_concurrency(module):
    """A batch's O(concurrency) (the BATCH fragment) is at least 1."""
    if module.params["concurrency"] < 1:
        module.fail_json(msg="concurrency: must be at least 1, not {0}".format(module.params["concurrency"]))


def run(module, action, connections=None):
    """Run ``action(client)`` and exit with its result, or fail with one clear message.

    ``connections``: how many requests the action may have in flight at once (a batch's concurrency).
    """
    hide_only_kubeconfig_secrets(module)
    check_requirements(module)
    try:
        result = action(client_for(module, connections))
    except BatchError as exc:
        module.fail_json(msg=str(exc), changed=exc.changed, results=exc.results)
    except WaitTimeoutError as exc:
        module.fail_json(msg=str(exc), last_seen=exc.last_seen or {})
    except KubeVirtOpsError as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)
