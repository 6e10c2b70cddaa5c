"""The AWX examples of extensions/awx/, run the way AWX runs them, against the lab.

AWX turns a credential into environment variables and files by rendering the injectors of its credential type
with the credential's inputs, then runs the job with ansible-runner. This test does the same: it renders the
injectors of extensions/awx/credential_types/*.yml (a sandboxed Jinja2 environment, as AWX uses) with the lab's
real certificates and keys, and runs the job template's playbook and the inventory source through
ansible_runner. The node description the job gets holds no secret and no path to one: a credential that did not
reach the modules fails the run.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import ansible_runner
import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import ROOT, VENV_BIN, _collections_path, lab_nodes

AWX = ROOT / "extensions" / "awx"
# The job's localhost runs modules with this venv's Python, as an execution environment runs them with its own.
LOCALHOST = f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}"
CREDENTIAL_TYPES = AWX / "credential_types"


def credential_type(name):
    return yaml.safe_load((CREDENTIAL_TYPES / f"{name}.yml").read_text())


def render_injectors(definition, inputs, private_dir):
    """Environment variables (and the files they point at) as AWX renders a credential of this type."""
    fields = {field["id"]: field for field in definition["inputs"]["fields"]}
    missing = [name for name in definition["inputs"].get("required", []) if not inputs.get(name)
               and "default" not in fields[name]]
    assert not missing, f"AWX would refuse the credential: {missing} required"
    assert set(inputs) <= set(fields), f"inputs the type does not have: {set(inputs) - set(fields)}"
    # AWX gives every field to the templates: its default, or an empty string when not filled in.
    context = {name: inputs.get(name, field.get("default", "")) for name, field in fields.items()}
    jinja = ImmutableSandboxedEnvironment()
    filenames = {}
    for key, template in (definition["injectors"].get("file") or {}).items():
        label = key.split(".", 1)[1]
        path = private_dir / f"awx_cred_{label}_{secrets.token_hex(4)}"
        path.write_text(jinja.from_string(template).render(context))
        path.chmod(0o600)
        filenames[label] = str(path)
    context["tower"] = {"filename": filenames}
    return {name: jinja.from_string(template).render(context)
            for name, template in (definition["injectors"].get("env") or {}).items()}


def without_secrets(node):
    """The node as the job gets it: addresses only. Logins, keys and certificates come from credentials."""
    node = json.loads(json.dumps(node))
    for key in ("user", "private_key_file", "known_hosts_file", "host_key_checking"):
        node["ssh"].pop(key, None)
    for key in ("client_cert", "client_key", "server_cert", "token_id", "token_secret", "ca_file"):
        node["api"].pop(key, None)
    return node


def lab_credentials(private_dir, nodes):
    """The lab's SSH login and LXD client certificate as two AWX credentials, rendered to env and files."""
    ssh = nodes["lxd"]["ssh"]
    env = render_injectors(credential_type("node_ssh"), {
        "ssh_user": ssh["user"],
        "ssh_private_key": Path(ssh["private_key_file"]).read_text(),
        "ssh_known_hosts": Path(ssh["known_hosts_file"]).read_text(),
        "ssh_host_key_checking": "strict",
    }, private_dir)
    api = nodes["lxd"]["api"]
    env.update(render_injectors(credential_type("lxd_client_cert"), {
        "client_cert": Path(api["client_cert"]).read_text(),
        "client_key": Path(api["client_key"]).read_text(),
        "server_cert": Path(api["server_cert"]).read_text(),
    }, private_dir))
    return env


@pytest.fixture(autouse=True)
def venv_on_path(monkeypatch):
    """ansible-runner looks up ansible-playbook and ansible-inventory on PATH, as AWX finds them in the EE."""
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def awx_instance():
    name = f"awx-{secrets.token_hex(3)}"
    yield name
    subprocess.run(["lxc", "delete", "--force", name], capture_output=True, check=False)


def runner_env(credential_env):
    # The collection as an execution environment has it installed; no ONECLICKVIRT_* of the test's own leaks in.
    leaked = [name for name in os.environ if name.startswith("ONECLICKVIRT_")]
    assert not leaked, f"the test environment already sets {leaked}"
    return dict(credential_env, ANSIBLE_COLLECTIONS_PATH=str(_collections_path()), ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")


def run_job(tmp_path, env, extravars):
    """The job template's playbook through ansible-runner, as AWX launches it."""
    private_data_dir = tmp_path / f"job-{secrets.token_hex(3)}"
    private_data_dir.mkdir()
    return ansible_runner.run(private_data_dir=str(private_data_dir), playbook=str(AWX / "playbooks" / "instance.yml"),
                              inventory=LOCALHOST, envvars=env, extravars=extravars,
                              quiet=True, timeout=300)


def task_results(run, task):
    return [event["event_data"]["res"] for event in run.events
            if event.get("event") == "runner_on_ok" and event["event_data"].get("task") == task]


def plain(value):
    """ansible-core 2.19's ansible-inventory writes values from inventory sources as {"__ansible_unsafe": value}."""
    return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value


def secret_texts(nodes):
    return [Path(nodes["lxd"]["api"]["client_key"]).read_text().strip().splitlines()[1],
            Path(nodes["lxd"]["ssh"]["private_key_file"]).read_text().strip().splitlines()[1]]


def test_credential_types_feed_only_variables_the_collection_reads():
    """Every variable an injector sets is an ONECLICKVIRT_* fallback of the node description (node.py)."""
    source = (ROOT / "plugins" / "module_utils" / "node.py").read_text()
    for path in sorted(CREDENTIAL_TYPES.glob("*.yml")):
        definition = yaml.safe_load(path.read_text())
        assert definition["kind"] == "cloud" and definition["name"], path.name
        assert set(definition) == {"name", "description", "kind", "inputs", "injectors"}, path.name
        for variable in definition["injectors"]["env"]:
            assert variable.startswith("ONECLICKVIRT_"), (path.name, variable)
            assert f'_env("{variable[len("ONECLICKVIRT_"):]}")' in source, (path.name, variable)
        for field in definition["inputs"]["fields"]:
            if field["id"] in ("ssh_private_key", "client_key", "token_secret"):
                assert field.get("secret") is True, (path.name, field["id"])


def test_job_template_and_inventory_source_with_injected_credentials(tmp_path, awx_instance):
    nodes = lab_nodes()
    private_dir = tmp_path / "credentials"
    private_dir.mkdir(mode=0o700)
    env = runner_env(lab_credentials(private_dir, nodes))
    assert env["ONECLICKVIRT_API_SERVER_CERT"] and Path(env["ONECLICKVIRT_API_CLIENT_KEY"]).stat().st_mode & 0o077 == 0
    node = without_secrets(nodes["lxd"])
    assert node["api"] == {"url": "https://127.0.0.1:8443"} and set(node["ssh"]) == {"host", "port"}

    # -- the job: node health over API and SSH (both credentials used), then the instance, started
    run = run_job(tmp_path, env, {"virt_node": node, "virt_instance_name": awx_instance})
    stdout = run.stdout.read()
    assert run.status == "successful" and run.rc == 0, stdout[-4000:]
    facts = task_results(run, "The node is reachable over its API and SSH")[0]
    assert facts["health"]["checks"]["api"]["success"] is True, facts["health"]
    assert facts["health"]["checks"]["ssh"]["success"] is True, facts["health"]
    created = task_results(run, "The instance is in the state the survey asked for")[0]
    assert created["changed"] is True and created["instance"]["status"] == "running"
    assert created["transport"] == "api"
    stats = [event for event in run.events if event.get("event") == "playbook_on_stats"][0]
    assert stats["event_data"]["artifact_data"]["virt_instance"]["name"] == awx_instance
    listed = json.loads(subprocess.run(["lxc", "list", f"^{awx_instance}$", "--format", "json"], capture_output=True,
                                       text=True, check=True).stdout)
    assert [item["status"] for item in listed] == ["Running"]
    for text in secret_texts(nodes):
        assert text not in stdout and text not in json.dumps(list(run.events))

    # -- the inventory source, the example file with the lab's node, with the same credentials
    inventory_dir = tmp_path / "inventory"
    inventory_dir.mkdir()
    source = yaml.safe_load((AWX / "inventory" / "fleet.virt.yml").read_text())
    source.update(nodes=[node], name_pattern="awx-[0-9a-f]{6}")
    (inventory_dir / "lab.virt.yml").write_text(yaml.safe_dump(source))
    out, err = ansible_runner.get_inventory("list", [str(inventory_dir / "lab.virt.yml")], response_format="json",
                                            envvars=env, quiet=True)
    hostvars = out["_meta"]["hostvars"]
    assert awx_instance in hostvars, (out, err)
    host = {key: plain(value) for key, value in hostvars[awx_instance].items()}
    assert host["virt_status"] == "running" and host["virt_node"] == "lxd" and host["virt_backend"] == "lxd"
    assert awx_instance in out["image_ocv_busybox"]["hosts"]

    # -- the job again with state absent: gone
    run = run_job(tmp_path, env, {"virt_node": node, "virt_instance_name": awx_instance,
                                  "virt_instance_state": "absent"})
    assert run.status == "successful", run.stdout.read()[-4000:]
    assert task_results(run, "The instance is in the state the survey asked for")[0]["changed"] is True
    assert subprocess.run(["lxc", "list", f"^{awx_instance}$", "--format", "csv"], capture_output=True, text=True,
                          check=True).stdout.strip() == ""


def test_without_the_credentials_the_job_fails(tmp_path, awx_instance):
    """The proof that the credentials did the work: the same job without them cannot reach the node."""
    env = runner_env({})
    run = run_job(tmp_path, env, {"virt_node": without_secrets(lab_nodes()["lxd"]), "virt_instance_name": awx_instance})
    stdout = run.stdout.read()
    assert run.status == "failed", stdout[-3000:]
    assert "client_cert" in stdout, stdout[-3000:]


def test_proxmox_token_credential_reaches_the_simulator(tmp_path):
    """The Proxmox token credential alone (and its CA file) authenticates to the lab's Proxmox VE API."""
    nodes = lab_nodes()
    api = nodes["proxmox"]["api"]
    private_dir = tmp_path / "credentials"
    private_dir.mkdir(mode=0o700)
    env = runner_env(render_injectors(credential_type("proxmox_token"), {
        "token_id": api["token_id"], "token_secret": api["token_secret"], "ca_cert": Path(api["ca_file"]).read_text(),
    }, private_dir))
    node = {"name": "proxmox", "type": "proxmox", "execution_rule": "api_only", "proxmox_node": "pve",
            "api": {"url": api["url"]}}
    playbook = tmp_path / "project" / "node.yml"
    playbook.parent.mkdir()
    playbook.write_text(yaml.safe_dump([{
        "name": "Node facts", "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/oneclickvirt.virt.virt": {"node": node}},
        "tasks": [{"name": "Read the node", "oneclickvirt.virt.virt_node_info": {}}]}]))
    (tmp_path / "job").mkdir()
    run = ansible_runner.run(private_data_dir=str(tmp_path / "job"), playbook=str(playbook),
                             inventory=LOCALHOST, envvars=env, quiet=True, timeout=300)
    stdout = run.stdout.read()
    assert run.status == "successful", stdout[-3000:]
    result = task_results(run, "Read the node")[0]
    assert result["health"]["checks"]["api"]["success"] is True and result["transport"] == "api", result["health"]
    assert api["token_secret"] not in stdout and api["token_secret"] not in json.dumps(list(run.events))
