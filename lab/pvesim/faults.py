"""Run-time knobs for the reliability tests: latency, task timing, lock timeouts, injected failures.

Set through the control endpoint `/_sim/faults` (see server.py); they live in memory only, so a restart
of the simulator always comes back clean.
"""
import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field, fields


@dataclass
class Rule:
    """Answer matching API requests with a failure instead of the real answer."""
    path: str = ""                 # regular expression searched in the API path (after /api2/json)
    method: str = ""               # GET / POST / PUT / DELETE; empty matches all
    via: str = "api"               # api (HTTPS) | cli (node tools) | any
    body: str = ""                 # regular expression searched in the request's parameters (as JSON)
    action: str = "error"          # error: status + message | timeout: hold the answer | close: drop the connection
    status: int = 500
    message: str = "simulated failure"
    seconds: float = 30.0          # for timeout: how long the answer is held back before the real one
    count: int = 0                 # 0: every matching request; n > 0: the next n, then the rule retires
    hits: int = 0

    def matches(self, method, path, via, params=None):
        return ((not self.method or self.method.upper() == method)
                and (self.via == "any" or self.via == via)
                and (not self.path or re.search(self.path, path) is not None)
                and (not self.body or re.search(self.body, json.dumps(params or {}, sort_keys=True)) is not None))


@dataclass
class TaskFailure:
    """Make the next task(s) of a type end with this exit status, without their effect."""
    type: str                      # qmstart, qmcreate, vzstart, download, ...
    id: str = ""                   # task id (usually the vmid); empty matches all
    exitstatus: str = "simulated task failure"
    count: int = 1


@dataclass
class Settings:
    latency: float = 0.0           # seconds added before every API answer
    task_delay: float = float(os.environ.get("PVESIM_TASK_DELAY", "0.3"))
    task_delays: dict = field(default_factory=dict)     # per task type, overrides task_delay
    lock_timeout: float = 10.0     # PVE waits 10 s for a guest's config lock, then fails
    rules: list = field(default_factory=list)
    task_failures: list = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()

    def to_dict(self):
        with self._lock:
            return {f.name: ([asdict(x) for x in getattr(self, f.name)] if f.name in ("rules", "task_failures")
                             else getattr(self, f.name)) for f in fields(self)}

    def update(self, changes):
        """Merge a JSON object of changes; lists given are replaced as a whole. Unknown keys are an error."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        rules = [Rule(**r) for r in changes.get("rules", [])]
        failures = [TaskFailure(**t) for t in changes.get("task_failures", [])]
        for rule in rules:
            if rule.action not in ("error", "timeout", "close") or rule.via not in ("api", "cli", "any"):
                raise ValueError(f"bad rule: {asdict(rule)}")
            re.compile(rule.path)
            re.compile(rule.body)
        with self._lock:
            for key, value in changes.items():
                if key == "rules":
                    self.rules = rules
                elif key == "task_failures":
                    self.task_failures = failures
                elif key == "task_delays":
                    self.task_delays = {str(k): float(v) for k, v in value.items()}
                else:
                    setattr(self, key, float(value))

    def reset(self):
        with self._lock:
            for f in fields(self):
                setattr(self, f.name, f.default_factory() if callable(f.default_factory) else f.default)

    def delay_for(self, task_type):
        with self._lock:
            return self.task_delays.get(task_type, self.task_delay)

    def take_rule(self, method, path, via, params=None):
        """The rule that fires for this request, counting it; None when none does."""
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, via, params):
                    rule.hits += 1
                    if rule.count and rule.hits >= rule.count:
                        self.rules.remove(rule)
                    return rule
        return None

    def take_task_failure(self, task_type, task_id):
        with self._lock:
            for failure in self.task_failures:
                if failure.type == task_type and failure.id in ("", str(task_id)):
                    failure.count -= 1
                    if failure.count <= 0:
                        self.task_failures.remove(failure)
                    return failure.exitstatus
        return None
