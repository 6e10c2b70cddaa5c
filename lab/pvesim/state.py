"""The simulator's state: guests, volumes and tasks, in one JSON file of its own.

Every change is written at once with an atomic replace (temp file, fsync, rename), so a `kill -9` of the
simulator at any moment leaves either the old or the new state, never half of one. One re-entrant lock
serialises all readers and writers; the state is small, so that costs nothing measurable.
"""
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = 1
MAX_FINISHED_TASKS = 2000


@dataclass
class Guest:
    vmid: int
    kind: str                      # "qemu" or "lxc"
    config: dict                   # typed values, as GET .../config returns them
    status: str = "stopped"        # "running" or "stopped"
    started_at: float = 0.0        # wall-clock start, for uptime
    fs: dict = field(default_factory=dict)      # the guest's simulated filesystem (guestos.py)
    execs: dict = field(default_factory=dict)   # guest-agent exec results, by pid (text)

    @property
    def name(self):
        key = "name" if self.kind == "qemu" else "hostname"
        return self.config.get(key) or (f"VM {self.vmid}" if self.kind == "qemu" else f"CT{self.vmid}")

    @property
    def word(self):
        """How PVE's messages name the guest: "VM 100" or "CT 100"."""
        return "VM" if self.kind == "qemu" else "CT"


@dataclass
class Volume:
    volid: str                     # "local-lvm:vm-100-disk-0"
    size: int                      # bytes
    vmid: int
    format: str = "raw"
    ctime: int = 0


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: str = "running"        # "running" or "stopped"
    exitstatus: str = ""
    endtime: int = 0
    log: list = field(default_factory=list)


class Store:
    def __init__(self, path, seed):
        self.path = Path(path)
        self.lock = threading.RLock()
        self.guests, self.volumes, self.tasks = {}, {}, {}
        if self.path.exists():
            self._load()
        else:
            seed(self)
            self.save()

    def _load(self):
        data = json.loads(self.path.read_text())
        self.guests = {g["vmid"]: Guest(**g) for g in data.get("guests", [])}
        self.volumes = {v["volid"]: Volume(**v) for v in data.get("volumes", [])}
        self.tasks = {t["upid"]: Task(**t) for t in data.get("tasks", [])}
        for task in self.tasks.values():
            if task.status == "running":
                # The worker died with the old process; PVE shows such tasks the same way.
                task.status, task.exitstatus = "stopped", "unexpected status"
                task.endtime = task.endtime or int(time.time())
                task.log.append("TASK ERROR: unexpected status")

    def save(self):
        with self.lock:
            finished = [t for t in self.tasks.values() if t.status != "running"]
            for task in finished[:-MAX_FINISHED_TASKS]:
                del self.tasks[task.upid]
            data = {"format": FORMAT,
                    "guests": [asdict(g) for g in sorted(self.guests.values(), key=lambda g: g.vmid)],
                    "volumes": [asdict(v) for v in self.volumes.values()],
                    "tasks": [asdict(t) for t in self.tasks.values()]}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "w") as stream:
                json.dump(data, stream, separators=(",", ":"))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)

    def reset(self, seed):
        with self.lock:
            self.guests, self.volumes, self.tasks = {}, {}, {}
            seed(self)
            self.save()
