"""What the Proxmox tests share: the lab's simulator node, raw API calls, and the logs the simulator keeps."""
import json
import os
import time
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = Path(os.environ.get("OCV_LAB_DIR", "/var/lib/oneclickvirt-lab"))
PVESIM_DIR = LAB_DIR / "pvesim"
REQUEST_LOG = PVESIM_DIR / "requests.log"
COMMAND_LOG = PVESIM_DIR / "ssh" / "commands.log"


def proxmox_node():
    nodes_file = ROOT / ".lab" / "nodes.yml"
    node = None
    if nodes_file.exists():
        node = (yaml.safe_load(nodes_file.read_text()) or {}).get("proxmox")
    if node is None and (PVESIM_DIR / "node.json").exists():
        node = json.loads((PVESIM_DIR / "node.json").read_text())
    if node is None:
        pytest.fail("the Proxmox simulator is not part of the lab (no node `proxmox` in .lab/nodes.yml and no "
                    f"{PVESIM_DIR / 'node.json'}): run `make lab`", pytrace=False)
    return node


class Api:
    """Raw PVE API calls with `requests`: status, reason and body exactly as the server sent them."""

    def __init__(self, url, token_id, token_secret, ca_file):
        self.url = url.rstrip("/")
        self.ca_file = ca_file
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"PVEAPIToken={token_id}={token_secret}"

    def call(self, method, path, timeout=30, headers=None, files=None, **params):
        kwargs = {"params": params} if method in ("GET", "DELETE") else {"data": params}
        # verify= per request: REQUESTS_CA_BUNDLE is set here and would win over a session setting.
        return self.session.request(method, f"{self.url}/api2/json{path}", timeout=timeout, verify=self.ca_file,
                                    headers=headers, files=files, **kwargs)

    def data(self, method, path, **params):
        answer = self.call(method, path, **params)
        assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.reason} {answer.text}"
        body = answer.json()
        assert set(body) >= {"data"}, body
        return body["data"]

    def wait(self, upid, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.data("GET", f"/nodes/pve/tasks/{upid}/status")
            if status["status"] == "stopped":
                return status
            time.sleep(0.05)
        raise AssertionError(f"task {upid} still running after {timeout}s")

    def control(self, method, path, payload=None):
        answer = self.session.request(method, f"{self.url}{path}", json=payload, timeout=30, verify=self.ca_file)
        assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()




class RequestLog:
    """The simulator's own record of every API and node-tool request, from the moment `start()` is called."""

    def __init__(self):
        self.offset = None

    def start(self):
        self.offset = REQUEST_LOG.stat().st_size if REQUEST_LOG.exists() else 0
        return self

    def entries(self):
        time.sleep(0.2)  # the last answer is logged just before it is sent
        with open(REQUEST_LOG, "rb") as handle:
            handle.seek(self.offset)
            return [json.loads(line) for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]

    def writes(self):
        return [f"{entry['via']} {entry['method']} {entry['path']}" for entry in self.entries()
                if entry["method"] != "GET"]
