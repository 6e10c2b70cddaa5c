# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Execution rules: which transport serves a run, and when `auto` falls back from the API to SSH.

- api_only / ssh_only: that transport alone.
- auto: the API when configured. A transport failure on a read, or before a write was sent, switches the
  rest of the run to SSH with a warning naming the API error. A write that the server may have received is
  never replayed: the caller gets UncertainWrite, re-reads the state over SSH and converges from there.
"""

from __future__ import annotations

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    TransportError, UncertainWrite, Unsupported)

READ_METHODS = ("GET", "HEAD")


class Router:
    """Sends backend requests over the API client or the SSH client, as the node's rule says.

    `make_api()` and `make_ssh()` build the two clients lazily (so an API-only run never imports paramiko).
    Both clients offer the same `request(method, path, **kwargs)`.
    """

    def __init__(self, node, make_api, make_ssh, warn=None):
        self.node = node
        self.make_api = make_api
        self.make_ssh = make_ssh
        self.warn = warn or (lambda message: None)
        self.clients = {}
        self.fallback_reason = None
        if node.execution_rule == "ssh_only" or (node.execution_rule == "auto" and node.api is None):
            self.transport = "ssh"
        else:
            self.transport = "api"

    def client(self, transport=None):
        transport = transport or self.transport
        if transport not in self.clients:
            self.clients[transport] = (self.make_api if transport == "api" else self.make_ssh)()
        return self.clients[transport]

    def can_fall_back(self):
        return self.node.execution_rule == "auto" and self.transport == "api" and self.node.ssh is not None

    def fall_back(self, error):
        self.fallback_reason = f"API transport failed: {error}"
        self.warn(f"node {self.node.name}: {self.fallback_reason}; continuing over SSH")
        self.transport = "ssh"

    def request(self, method, path, **kwargs):
        """One backend request; reads may be retried over SSH, writes only when surely not sent."""
        return self.run(method not in READ_METHODS, lambda client: client.request(method, path, **kwargs))

    def run(self, write, action):
        """Run `action(client)` on the current transport, falling back as the rule allows."""
        try:
            return action(self.client())
        except TransportError as error:
            if not self.can_fall_back():
                raise self._final(error)
            self.fall_back(error)
            if write and error.sent:
                raise UncertainWrite(error)
        try:
            return action(self.client())
        except TransportError as error:
            raise self._final(error)

    def ssh(self, purpose):
        """The SSH client for work that needs a shell on the node, under any rule but api_only."""
        if self.node.execution_rule == "api_only":
            raise Unsupported(f"node {self.node.name}: {purpose} needs SSH to the node, but execution_rule is "
                              "api_only; use auto or ssh_only and give node.ssh")
        if self.node.ssh is None:
            raise Unsupported(f"node {self.node.name}: {purpose} needs SSH to the node; give node.ssh.host")
        return self.client("ssh")

    def _final(self, error):
        if self.fallback_reason:
            return TransportError(f"node {self.node.name}: both transports failed. {self.fallback_reason}; "
                                  f"SSH transport failed: {error}", sent=error.sent)
        return TransportError(f"node {self.node.name} ({self.transport}): {error}", sent=error.sent)

    def close(self):
        for client in self.clients.values():
            client.close()
        self.clients = {}
