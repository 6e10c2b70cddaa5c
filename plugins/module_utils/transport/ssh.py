# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SSH transport: one paramiko connection per module run, reused by every command.

Every command is an argv list, quoted in exactly one place (`quote_argv`). Secrets travel on stdin, never
in the command line. Host keys are checked against known_hosts by default.
"""

from __future__ import annotations

import shlex
import socket
import time

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec, TransportError
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import ExecResult


def quote_argv(argv):
    """The one place where an argv list becomes a command line for the node's shell."""
    if isinstance(argv, str) or not argv:
        raise InvalidSpec("internal: commands are argv lists, never strings")
    return shlex.join(str(arg) for arg in argv)


class SshTransport:
    def __init__(self, settings, warn=None):
        self.settings = settings
        self.warn = warn or (lambda message: None)
        self.client = None
        self.commands_run = 0

    # -- connection -----------------------------------------------------------------------------------
    def _policy(self, paramiko):
        mode = self.settings.host_key_checking
        if mode == "ignore":
            self.warn(f"SSH host key checking is off for {self.settings.host}:{self.settings.port} "
                      "(host_key_checking: ignore); the connection could be intercepted")
            return paramiko.AutoAddPolicy()
        if mode == "accept_new":
            return _AcceptNewPolicy(self.settings.known_hosts_file)
        return paramiko.RejectPolicy()

    def connect(self):
        if self.client is not None:
            return self.client
        import paramiko  # imported only when a task really goes over SSH

        settings = self.settings
        client = paramiko.SSHClient()
        if settings.known_hosts_file:
            try:
                client.load_host_keys(settings.known_hosts_file)
            except FileNotFoundError:
                if settings.host_key_checking == "strict":
                    raise TransportError(f"SSH: known_hosts file {settings.known_hosts_file} does not exist")
        else:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(self._policy(paramiko))
        pkey = None
        if settings.private_key:
            pkey = _load_private_key(paramiko, settings.private_key)
        try:
            client.connect(settings.host, port=settings.port, username=settings.user, pkey=pkey,
                           key_filename=settings.private_key_file, password=settings.password,
                           timeout=settings.connect_timeout, banner_timeout=settings.connect_timeout,
                           auth_timeout=settings.connect_timeout, allow_agent=False,
                           look_for_keys=not (pkey or settings.private_key_file or settings.password))
        except paramiko.BadHostKeyException as error:
            raise TransportError(f"SSH: the host key of {settings.host}:{settings.port} changed "
                                 f"({error.key.get_name()}); refusing to connect. If the change is expected, "
                                 "remove the old key from the known_hosts file")
        except paramiko.SSHException as error:
            if "not found in known_hosts" in str(error):
                raise TransportError(f"SSH: the host key of {settings.host}:{settings.port} is unknown and "
                                     "host_key_checking is strict; add it to known_hosts or use accept_new")
            raise TransportError(f"SSH to {settings.user}@{settings.host}:{settings.port} failed: {error}")
        except (OSError, socket.timeout) as error:
            raise TransportError(f"SSH to {settings.host}:{settings.port} failed: {error}")
        self.client = client
        return client

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None

    # -- commands -------------------------------------------------------------------------------------
    def open_channel(self, argv, timeout=None):
        """Start a command and return its channel (for streams such as `docker system dial-stdio`)."""
        client = self.connect()
        try:
            channel = client.get_transport().open_session(timeout=self.settings.connect_timeout)
            channel.settimeout(timeout or self.settings.command_timeout)
            channel.exec_command(quote_argv(argv))
        except Exception as error:  # paramiko raises several unrelated types here
            self.close()
            raise TransportError(f"SSH: cannot start {argv[0]}: {error}")
        self.commands_run += 1
        return channel

    def run(self, argv, stdin=None, timeout=None):
        """Run argv on the node; stdin (str or bytes) is written then closed. Returns ExecResult."""
        timeout = timeout or self.settings.command_timeout
        channel = self.open_channel(argv, timeout)
        deadline = time.monotonic() + timeout
        stdout, stderr = [], []
        try:
            if stdin is None:
                channel.shutdown_write()
            else:
                try:
                    channel.sendall(stdin.encode("utf-8") if isinstance(stdin, str) else stdin)
                    channel.shutdown_write()
                except OSError:
                    # The command ended without reading all its input (`true`, `head -1`): its output and exit
                    # status are still there to read. A connection that really broke times out below.
                    pass
            while True:
                if channel.recv_ready():
                    stdout.append(channel.recv(65536))
                elif channel.recv_stderr_ready():
                    stderr.append(channel.recv_stderr(65536))
                elif channel.exit_status_ready() and (channel.eof_received or channel.closed):
                    # The exit status can arrive before the last output; the channel's EOF comes after it.
                    break
                else:
                    if time.monotonic() > deadline:
                        raise socket.timeout(f"no exit within {timeout}s")
                    channel.status_event.wait(0.01)
            while channel.recv_ready():
                stdout.append(channel.recv(65536))
            while channel.recv_stderr_ready():
                stderr.append(channel.recv_stderr(65536))
            rc = channel.recv_exit_status()
        except (OSError, socket.timeout, EOFError) as error:
            self.close()
            raise TransportError(f"SSH: {argv[0]} on {self.settings.host} did not finish: {error}", sent=True)
        finally:
            channel.close()
        return ExecResult(rc=rc, stdout=b"".join(stdout).decode("utf-8", "replace"),
                          stderr=b"".join(stderr).decode("utf-8", "replace"))


class ChannelStream:
    """A paramiko channel behind the stream interface of transport.http.HttpClient."""

    def __init__(self, channel):
        self.channel = channel

    def settimeout(self, seconds):
        self.channel.settimeout(seconds)

    def send_all(self, data):
        self.channel.sendall(data)

    def recv(self, size):
        return self.channel.recv(size)

    def close_write(self):
        self.channel.shutdown_write()

    def close(self):
        self.channel.close()


def _load_private_key(paramiko, text):
    import io

    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except paramiko.SSHException:
            continue
    raise InvalidSpec("node.ssh.private_key: not an unencrypted Ed25519, ECDSA or RSA private key in PEM/OpenSSH form")


class _AcceptNewPolicy:
    """Like OpenSSH's StrictHostKeyChecking=accept-new: remember unknown hosts, refuse changed keys.

    paramiko raises BadHostKeyException for a changed key before any policy is asked, so only unknown
    hosts reach this.
    """

    def __init__(self, known_hosts_file):
        self.known_hosts_file = known_hosts_file

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self.known_hosts_file:
            with open(self.known_hosts_file, "a") as handle:
                handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
