"""Tasks with UPIDs, run asynchronously as PVE's workers are, and the per-guest config locks.

A task is created at once (the API answers with its UPID), then a thread takes the guest's config lock
(waiting at most `lock_timeout`, then failing as PVE does), waits the configured delay (the time the work
"takes"), and applies its effect. A failing task ends with `exitstatus` set to the error message, and its
log ends with "TASK ERROR: ...", exactly what clients poll for.
"""
import itertools
import os
import threading
import time

from .state import Task


class TaskFailed(Exception):
    """Ends a task with this message as its exit status."""


class LockTimeout(Exception):
    pass


def upid_encode(node, pid, pstart, starttime, task_type, task_id, user):
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{task_id}:{user}:"


def upid_decode(upid):
    parts = upid.split(":")
    if len(parts) != 9 or parts[0] != "UPID" or parts[8] != "":
        raise ValueError(f"unable to parse worker upid '{upid}'")
    return {"node": parts[1], "pid": int(parts[2], 16), "pstart": int(parts[3], 16),
            "starttime": int(parts[4], 16), "type": parts[5], "id": parts[6], "user": parts[7]}


class ConfigLocks:
    """PVE's flock on each guest config (`/var/lock/qemu-server/lock-<vmid>.conf`)."""

    def __init__(self):
        self._locks = {}
        self._guard = threading.Lock()

    def _lock(self, vmid):
        with self._guard:
            return self._locks.setdefault(vmid, threading.Lock())

    def acquire(self, vmid, kind, timeout):
        if not self._lock(vmid).acquire(timeout=max(timeout, 0)):
            path = (f"/var/lock/qemu-server/lock-{vmid}.conf" if kind == "qemu"
                    else f"/run/lock/lxc/pve-config-{vmid}.lock")
            raise LockTimeout(f"can't lock file '{path}' - got timeout")

    def release(self, vmid):
        self._lock(vmid).release()

    def hold(self, vmid, kind, seconds):
        """Fault injection: hold a guest's lock for a while from a thread of its own."""
        self.acquire(vmid, kind, 0)
        timer = threading.Timer(seconds, self.release, args=(vmid,))
        timer.daemon = True
        timer.start()


class TaskRunner:
    def __init__(self, store, settings, node):
        self.store = store
        self.settings = settings
        self.node = node
        self.locks = ConfigLocks()
        # Worker "PIDs": unique and increasing; pstart like a process start time in clock ticks.
        self._pids = itertools.count(100000 + os.getpid() % 50000)

    def start(self, task_type, task_id, user, work, guest=None, on_failure=None):
        """Create a task and run `work(log)` in a thread; -> UPID.

        `guest` (vmid, kind) takes that guest's config lock for the whole task. `work` raises TaskFailed
        to fail; `on_failure(message)` then undoes what the API call set up (a half-created guest).
        """
        starttime = int(time.time())
        pid = next(self._pids)
        pstart = int(time.monotonic() * 100) & 0xFFFFFFFF
        upid = upid_encode(self.node, pid, pstart, starttime, task_type, task_id, user)
        task = Task(upid=upid, node=self.node, pid=pid, pstart=pstart, starttime=starttime, type=task_type,
                    id=str(task_id), user=user)
        with self.store.lock:
            self.store.tasks[upid] = task
            self.store.save()
        thread = threading.Thread(target=self._run, args=(task, work, guest, on_failure), daemon=True,
                                  name=f"task-{task_type}-{task_id}")
        thread.start()
        return upid

    def _run(self, task, work, guest, on_failure):
        def log(line):
            with self.store.lock:
                task.log.append(line)

        error = None
        locked = False
        try:
            if guest:
                self.locks.acquire(guest[0], guest[1], self.settings.lock_timeout)
                locked = True
            time.sleep(self.settings.delay_for(task.type))
            injected = self.settings.take_task_failure(task.type, task.id)
            if injected:
                raise TaskFailed(injected)
            work(log)
        except (TaskFailed, LockTimeout) as failure:
            error = str(failure)
        except Exception as failure:  # a bug in the simulator must still end the task visibly
            error = f"pvesim internal error: {failure!r}"
        finally:
            if locked:
                self.locks.release(guest[0])
        if error and on_failure:
            try:
                on_failure(error)
            except Exception as failure:
                error += f" (cleanup failed: {failure!r})"
        with self.store.lock:
            if task.status == "stopped":   # stopped through DELETE .../tasks/{upid} meanwhile
                return
            task.status, task.endtime = "stopped", int(time.time())
            task.exitstatus = error.replace("\n", " ") if error else "OK"
            task.log.append(f"TASK ERROR: {task.exitstatus}" if error else "TASK OK")
            self.store.save()

    def stop(self, upid):
        """DELETE .../tasks/{upid}: the task is marked as interrupted (its thread still ends on its own)."""
        with self.store.lock:
            task = self.store.tasks.get(upid)
            if task and task.status == "running":
                task.status, task.endtime, task.exitstatus = "stopped", int(time.time()), "interrupted by signal"
                task.log.append("TASK ERROR: interrupted by signal")
                self.store.save()
