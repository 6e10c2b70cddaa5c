"""Create `.venv-peers`: the clients we did not write (the `ansible` 12.3.0 package, proxmoxer, requests).

The peer client test drives the Proxmox simulator with community.proxmox from this venv. It is kept apart
from `.venv` so the peers' ansible-core and collections never mix with the ones our own tests pin.
Idempotent: a marker file records the requirement set it was built with.
"""
import subprocess
import sys
import venv
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = PROJECT_ROOT / ".venv-peers"
REQUIREMENTS = ["ansible==12.3.0", "proxmoxer", "requests"]


def ensure():
    """Return the peer venv's bin directory, creating or completing the venv when needed."""
    marker = VENV_DIR / ".installed"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return VENV_DIR / "bin"
    if not (VENV_DIR / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV_DIR)
    subprocess.run([str(VENV_DIR / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *REQUIREMENTS], check=True)
    marker.write_text(wanted)
    return VENV_DIR / "bin"


if __name__ == "__main__":
    print(ensure())
    sys.exit(0)
