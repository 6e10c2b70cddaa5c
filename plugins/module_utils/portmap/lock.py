# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lock on the node around allocate-and-apply, so that concurrent tasks never pick the same host port.

The lock is `flock` on a file of the node, held by a command that runs for as long as its SSH channel stays
open: it prints `locked` once it holds the lock and then waits for the end of its stdin. Closing the channel
(or losing the connection, or the module dying) ends the command and so releases the lock; nothing is left
behind that a later run would have to clean up.
"""

from __future__ import annotations

import time

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, Conflict, TransportError

LOCK_FILE = "/run/lock/oneclickvirt-portmap.lock"
READY = "@@ocv-ready"


class NodeLock:
    """`with NodeLock(...) as lock:` holds the lock; `lock.output` is what `script` printed once it was held.

    `script` (with its positional `args`) runs right after the lock is taken, in the same session: the run's
    first read of the node costs no session of its own.
    """

    def __init__(self, ssh, node_name, timeout=120, path=LOCK_FILE, script=":", args=()):
        self.ssh = ssh
        self.node_name = node_name
        self.timeout = int(timeout)
        self.path = path
        self.script = script
        self.args = list(args)
        self.channel = None
        self.output = ""

    def __enter__(self):
        hold = f"echo locked\n{self.script}\necho {READY}\nexec cat >/dev/null"
        argv = ["flock", "-w", str(self.timeout), self.path, "sh", "-c", hold, "sh", *self.args]
        # The channel stays open while the run works; its own timeout must not end it early.
        self.channel = self.ssh.open_channel(argv, timeout=self.timeout + 3600)
        deadline = time.monotonic() + self.timeout + 30
        output = b""
        try:
            while f"\n{READY}\n".encode() not in output:
                if self.channel.recv_ready():
                    output += self.channel.recv(1024)
                elif self.channel.exit_status_ready():
                    rc = self.channel.recv_exit_status()
                    errors = b""
                    while self.channel.recv_stderr_ready():
                        errors += self.channel.recv_stderr(4096)
                    self._close()
                    if rc == 127:
                        raise BackendError(f"node {self.node_name}: `flock` (util-linux) is not installed; the "
                                           "port-mapping lock needs it")
                    raise Conflict(f"node {self.node_name}: could not take the port-mapping lock {self.path} within "
                                   f"{self.timeout}s (another run holds it?): "
                                   f"{errors.decode('utf-8', 'replace').strip() or f'flock exited {rc}'}; "
                                   "raise lock_timeout or try again")
                elif time.monotonic() > deadline:
                    self._close()
                    raise Conflict(f"node {self.node_name}: no answer from the port-mapping lock within "
                                   f"{self.timeout}s")
                else:
                    self.channel.status_event.wait(0.02)
        except (OSError, EOFError) as error:
            self._close()
            raise TransportError(f"SSH: the port-mapping lock on {self.node_name} broke: {error}", sent=True)
        text = output.decode("utf-8", "replace")
        self.output = text[text.index("locked\n") + len("locked\n"):text.rindex(f"\n{READY}\n") + 1]
        return self

    def result(self):
        """What the lock's script printed, as an ExecResult (for error messages)."""
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import ExecResult

        return ExecResult(rc=0, stdout=self.output, stderr="")

    def _close(self):
        if self.channel is not None:
            try:
                self.channel.shutdown_write()
            except (OSError, EOFError):
                pass
            self.channel.close()
            self.channel = None

    def __exit__(self, *exc):
        self._close()
        return False
