"""pvesim: a simulator of one Proxmox VE node, for the lab and the tests.

Standard library only: the lab starts it before any venv exists. It speaks the PVE REST API over HTTPS
(API tokens and tickets, `{"data": ...}` answers, UPID tasks), keeps its state in a JSON file of its own,
and answers the node's command-line tools (pvesh, qm, pct, pvesm, pveversion, systemctl) through a local
control socket. It is held to the official API schema by tests/integration/test_pve_conformance.py,
which checks every request it served during a test run.
"""

PVE_VERSION = "8.4.1"
PVE_RELEASE = "8.4"
PVE_REPOID = "2a5fa54a8503f96d"
KERNEL = "6.8.12-9-pve"
NODE = "pve"
