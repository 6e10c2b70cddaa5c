# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module does around its own work: build the node, run, report the transport, fail cleanly."""

from __future__ import annotations

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import provider_for
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import TransportError, VirtError
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import build_node


def scrub(text, secrets):
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def run_module(module, work, extra_secrets=()):
    """Build the node's provider, call `work(provider)` for a result dict, and exit or fail the module.

    Every result says which transport served it and, after a fallback, why.
    """
    provider = None
    secrets = list(extra_secrets)
    try:
        node = build_node(module.params["node"])
        secrets += node.secrets()
        provider = provider_for(node, warn=lambda message: module.warn(scrub(message, secrets)))
        result = work(provider)
    except (VirtError, TransportError) as error:
        failure = {"msg": scrub(str(error), secrets)}
        if provider is not None:
            failure["transport"] = provider.transport
            if provider.router.fallback_reason:
                failure["fallback_reason"] = scrub(provider.router.fallback_reason, secrets)
        module.fail_json(**failure)
    finally:
        if provider is not None:
            provider.close()
    result["transport"] = provider.transport
    if provider.router.fallback_reason:
        result["fallback_reason"] = scrub(provider.router.fallback_reason, secrets)
    if result.pop("failed", False):
        # A result that is also a failure (virt_exec's non-zero rc) keeps its fields, as ansible.builtin.command's.
        module.fail_json(**result)
    module.exit_json(**result)
