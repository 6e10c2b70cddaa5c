# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node health: the ssh, api and service checks, the verdict, and the node's facts.

Nothing here raises for a node that is down or misconfigured: every failure becomes a failed CheckResult
with its reason, or a line in `facts_errors`. Only a node description that does not validate is an error,
and the module reports that before anything is contacted.

- ssh: the node's shell answers (`uname -n` over the collection's SSH transport).
- api: the backend's API answers an authenticated request, over the API alone.
- service: the daemon answers through the node's own execution rule (API, else or after a fallback SSH),
  and, where the node's shell is reachable, the daemon's CLI works there (`docker version`, `lxc query /1.0`,
  `incus query /1.0`; Proxmox `pveversion` and `systemctl is-active pvedaemon pveproxy pvestatd`).

A check whose road is not configured (no node.ssh; no node.api; or a road the execution rule excludes) is
not enabled and not counted. Verdict: healthy when every enabled check passes, partial when some do,
unhealthy when none do, unknown when none is enabled.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import provider_for
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import TransportError, VirtError
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import CheckResult, HealthResult, NodeFacts
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import MIB

STATUSES = ("healthy", "partial", "unhealthy", "unknown")
PVE_SERVICES = ("pvedaemon", "pveproxy", "pvestatd")
KIB_PER_MIB = 1024
_MEMINFO = re.compile(r"^(\w+):\s+(\d+)\s*kB", re.MULTILINE)
# nproc, /proc/meminfo and df of the pool path ($1, when given) in one SSH session, each section marked.
SHELL_RESOURCES = ('echo @@ocv:nproc; nproc; echo @@ocv:meminfo; cat /proc/meminfo; '
                   'if [ "$#" -gt 0 ]; then echo @@ocv:df; df -P -B1 -- "$1"; fi')


class CheckFailed(Exception):
    """A check's own verdict: what failed, its kind, and what was seen on the way."""

    def __init__(self, message, kind, details=None):
        super().__init__(message)
        self.kind = kind
        self.details = details or {}


def verdict(checks):
    enabled = [check for check in checks if check.enabled]
    if not enabled:
        return "unknown"
    passed = sum(1 for check in enabled if check.success)
    if passed == len(enabled):
        return "healthy"
    return "partial" if passed else "unhealthy"


def classify(error):
    """The kind of a failure, so that reports can say "authentication" rather than quote a stack."""
    text = str(error).lower()
    if getattr(error, "status", None) in (401, 403) or any(word in text for word in (
            "authentication failed", "auth failed", "does not trust", "permission denied", "invalid token",
            "unauthorized", "not authorized", "no authentication", "not trusted")):
        return "authentication"
    if "host key" in text:
        return "host_key"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "tls" in text or "certificate" in text or "ssl" in text:
        return "tls"
    if isinstance(error, TransportError):
        return "connection"
    return "backend"


def run_check(name, action):
    """Run `action()` (returns a details dict, or raises CheckFailed) as a timed CheckResult; never raises."""
    started = time.monotonic()
    check = CheckResult(name=name)
    try:
        check.details = action() or {}
        check.success = True
    except CheckFailed as failure:
        check.success, check.error, check.error_kind, check.details = False, str(failure), failure.kind, failure.details
    except (VirtError, TransportError) as error:
        check.success, check.error, check.error_kind = False, str(error), classify(error)
    except Exception as error:  # a check must never take the report down with it
        check.success, check.error, check.error_kind = False, f"{type(error).__name__}: {error}", "internal"
    check.duration = time.monotonic() - started
    return check


def not_enabled(name, reason):
    return CheckResult(name=name, enabled=False, details={"reason": reason})


# -- the node's shell ---------------------------------------------------------------------------------------------
def parse_meminfo(text):
    """/proc/meminfo in MiB: memory_total, memory_available, swap_total, swap_free (those present)."""
    values = {key: int(number) for key, number in _MEMINFO.findall(text)}
    result = {}
    for field_name, key in (("memory_total", "MemTotal"), ("memory_available", "MemAvailable"),
                            ("swap_total", "SwapTotal"), ("swap_free", "SwapFree")):
        if key in values:
            result[field_name] = values[key] // KIB_PER_MIB
    if "memory_available" not in result and "MemFree" in values:  # kernels before 3.14
        result["memory_available"] = (values["MemFree"] + values.get("Cached", 0) + values.get("Buffers", 0)) // KIB_PER_MIB
    return result


def parse_df(text):
    """`df -P -B1 PATH`: (total, available) in MiB. Read from the right: a mount point may hold spaces."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"unexpected df output: {text[:200]!r}")
    fields = lines[-1].split()
    capacity = next(index for index, value in enumerate(fields) if value.endswith("%") and index >= 4)
    total, available = int(fields[capacity - 3]), int(fields[capacity - 1])
    return total // MIB, available // MIB


# -- the checks of one node ---------------------------------------------------------------------------------------
class NodeHealth:
    """Checks one node and gathers its facts. `run()` returns a HealthResult and never raises."""

    def __init__(self, node, warn=None, thresholds=None):
        self.node = node
        self.warn = warn or (lambda message: None)
        self.thresholds = thresholds or {}
        self.shell = None  # the SSH transport, once the ssh check has shown that it works
        self.source = None  # the backend's provider under the node's own rule
        self.hostname = None

    # -- what serves the backend reads --
    def _source_for(self, node):
        return provider_for(node, warn=self.warn)

    def run(self):
        started = time.monotonic()
        result = HealthResult(node=self.node.name, backend=self.node.type)
        try:
            # Each check catches its own failures; facts are best effort and never change the verdict.
            result.checks = [self._ssh_check(), self._api_check(), self._service_check()]
            result.facts = self._facts(result)
            result.checks += self._threshold_checks(result.facts.resources)
            if self.source is not None:
                result.transport = self.source.transport
                result.fallback_reason = self.source.router.fallback_reason
        except Exception as error:  # a bug here must still leave a report, not a traceback
            result.facts_errors.append(f"internal error: {type(error).__name__}: {error}")
        finally:
            self.close()
        result.status = verdict(result.checks)
        result.duration = time.monotonic() - started
        return result

    def close(self):
        for resource in (self.source, self.shell):
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # closing a broken connection must not hide the report
                    pass
        self.source = self.shell = None

    # -- ssh --
    def _ssh_check(self):
        node = self.node
        if node.ssh is None:
            return not_enabled("ssh", "node.ssh is not set")
        if node.execution_rule == "api_only":
            return not_enabled("ssh", "execution_rule api_only: SSH is not used")
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import SshTransport

        transport = SshTransport(node.ssh, self.warn)

        def action():
            result = transport.run(["uname", "-n"], timeout=node.ssh.connect_timeout + 5)
            if result.rc != 0:
                raise CheckFailed(f"uname -n failed on the node (rc {result.rc}): {result.stderr.strip()}", "command")
            self.shell, self.hostname = transport, result.stdout.strip() or None
            return {"host": node.ssh.host, "port": node.ssh.port, "user": node.ssh.user, "hostname": self.hostname}

        check = run_check("ssh", action)
        if not check.success:
            transport.close()
        return check

    # -- api --
    def _api_check(self):
        node = self.node
        if node.api is None:
            return not_enabled("api", "node.api is not set")
        if node.execution_rule == "ssh_only":
            return not_enabled("api", "execution_rule ssh_only: the API is not used")

        def action():
            source = self._source_for(replace(node, execution_rule="api_only"))
            try:
                return {"url": node.api.url, "version": source.version()}
            finally:
                source.close()

        return run_check("api", action)

    # -- service --
    def _service_check(self):
        def action():
            details, failures = {}, []
            self.source = self._source_for(self.node)
            try:
                version = self.source.version()
                details["daemon"] = {"answers": True, "transport": self.source.transport, "version": version}
            except (VirtError, TransportError) as error:
                details["daemon"] = {"answers": False, "transport": self.source.transport}
                failures.append(("daemon", str(error), classify(error)))
            if self.source.router.fallback_reason:
                details["daemon"]["fallback_reason"] = self.source.router.fallback_reason
            if self.shell is None:
                details["cli"] = {"checked": False, "reason": "the node's shell is not reachable or not configured"}
            else:
                try:
                    failures += self._cli(details)
                except (VirtError, TransportError) as error:
                    failures.append(("cli", str(error), classify(error)))
            if failures:
                raise CheckFailed("; ".join(f"{part}: {message}" for part, message, _kind in failures),
                                  failures[0][2], details)
            return details

        return run_check("service", action)

    def _cli(self, details):
        """The daemon's CLI on the node (and Proxmox's services). Returns [(part, message, kind)]."""
        backend, failures = self.node.type, []
        if backend == "docker":
            argv = ["docker", "version", "--format", "{{.Server.Version}}"]
        elif backend in ("lxd", "incus"):
            argv = ["lxc" if backend == "lxd" else "incus", "query", "--force-local", "/1.0"]
        else:
            argv = ["pveversion"]
        result = self.shell.run(argv, timeout=self.node.ssh.command_timeout)
        output = result.stdout.strip()
        cli = {"checked": True, "command": " ".join(argv[:2]), "rc": result.rc}
        if result.rc == 0 and backend in ("lxd", "incus"):
            try:
                output = (json.loads(output).get("environment") or {}).get("server_version") or ""
            except ValueError:
                output = ""
        if result.rc == 0 and output:
            cli["output"] = output.splitlines()[0][:200]
        else:
            reason = (result.stderr or result.stdout).strip().splitlines()
            reason = reason[-1] if reason else f"exited {result.rc} without output"
            kind = "command" if result.rc in (126, 127) else "service"
            failures.append(("cli", f"{' '.join(argv[:2])} failed on the node (rc {result.rc}): {reason}", kind))
        details["cli"] = cli
        if backend == "proxmox":
            failures += self._pve_services(details)
        return failures

    def _pve_services(self, details):
        result = self.shell.run(["systemctl", "is-active", *PVE_SERVICES], timeout=self.node.ssh.command_timeout)
        states = result.stdout.split()
        if len(states) != len(PVE_SERVICES):
            details["services"] = {}
            return [("services", f"systemctl is-active failed (rc {result.rc}): "
                                 f"{(result.stderr or result.stdout).strip()[:200]}", "command")]
        details["services"] = dict(zip(PVE_SERVICES, states))
        down = [f"{unit} is {state}" for unit, state in details["services"].items() if state != "active"]
        return [("services", ", ".join(down), "service")] if down else []

    # -- facts --
    def _facts(self, result):
        service = next(check for check in result.checks if check.name == "service")
        facts = None
        if not (service.details.get("daemon") or {}).get("answers"):
            result.facts_errors.append("backend facts: not gathered, the daemon did not answer (see the service check)")
        else:
            try:
                facts = self.source.node_facts()
            except NotImplementedError:
                result.facts_errors.append(f"backend facts: the {self.node.type} backend does not report them yet")
            except (VirtError, TransportError) as error:
                result.facts_errors.append(f"backend facts: {error}")
            except Exception as error:  # facts are best effort; the checks are the verdict
                result.facts_errors.append(f"backend facts: {type(error).__name__}: {error}")
        if facts is None:
            facts = NodeFacts(instance_types=list(getattr(self.source, "instance_types", ()) or ()))
        facts.hostname = facts.hostname or self.hostname
        if self.shell is not None and facts.shell_resources:
            self._shell_resources(facts.resources, result.facts_errors)
        return facts

    def _shell_resources(self, resources, errors):
        """The node's own view, over SSH: it wins where it has a value; the API's values fill the rest.

        One session for all three reads (a fixed script; the pool path is its argument, never part of it).
        """
        argv = ["sh", "-c", SHELL_RESOURCES, "sh"] + ([resources.disk_path] if resources.disk_path else [])
        try:
            result = self.shell.run(argv, timeout=self.node.ssh.command_timeout)
        except (VirtError, TransportError) as error:
            errors.append(f"resources over SSH: {error}")
            return
        sections = dict(part.split("\n", 1) if "\n" in part else (part, "")
                        for part in result.stdout.split("@@ocv:")[1:])
        cores = sections.get("nproc", "").strip()
        if cores.isdigit():
            resources.cpu_cores, resources.sources["cpu_cores"] = int(cores), "ssh"
        memory = parse_meminfo(sections.get("meminfo", ""))
        if not memory:
            errors.append(f"memory: /proc/meminfo is not readable on the node: {result.stderr.strip()[:200]}")
        for field_name, value in memory.items():
            setattr(resources, field_name, value)
            resources.sources[field_name] = "ssh"
        if resources.disk_path:
            try:
                resources.disk_total, resources.disk_free = parse_df(sections.get("df", ""))
                resources.sources.update(disk_total="ssh", disk_free="ssh")
            except (ValueError, StopIteration):
                errors.append(f"disk: df {resources.disk_path} failed on the node: {result.stderr.strip()[:200]}")

    # -- thresholds --
    def _threshold_checks(self, resources):
        checks = []
        for name, free, total, label in (("memory", resources.memory_available, resources.memory_total, "memory"),
                                         ("disk", resources.disk_free, resources.disk_total, "disk")):
            minimum_mib = self.thresholds.get(f"min_free_{name}")
            minimum_percent = self.thresholds.get(f"min_free_{name}_percent")
            if minimum_mib is None and minimum_percent is None:
                continue
            checks.append(_threshold(name, label, free, total, minimum_mib, minimum_percent))
        return checks


def _threshold(name, label, free, total, minimum_mib, minimum_percent):
    details = {"free": free, "total": total, "min_free": minimum_mib, "min_free_percent": minimum_percent}
    check = CheckResult(name=name, details=details)
    if free is None or (minimum_percent is not None and not total):
        check.success, check.error_kind = False, "unknown"
        check.error = f"free {label} is not known on this node (see facts_errors), so the threshold cannot be checked"
        return check
    problems = []
    if minimum_mib is not None and free < minimum_mib:
        problems.append(f"free {label} {free} MiB is below the minimum {minimum_mib} MiB")
    if minimum_percent is not None:
        percent = round(100.0 * free / total, 1)
        details["free_percent"] = percent
        if percent < minimum_percent:
            problems.append(f"free {label} {percent}% is below the minimum {minimum_percent}%")
    check.success = not problems
    if problems:
        check.error, check.error_kind = "; ".join(problems), "threshold"
    return check


def node_health(node, warn=None, thresholds=None):
    """Check one (already validated) node: a HealthResult, never an exception."""
    return NodeHealth(node, warn=warn, thresholds=thresholds).run()
