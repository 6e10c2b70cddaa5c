"""Run ``ansible-test sanity`` for one ansible-core line: ``tools/sanity.py 2.19`` or ``tools/sanity.py 2.18``.

Extra arguments go to ansible-test (``tools/sanity.py 2.19 --test pep8``). Exit code is ansible-test's.

What it does, and why:
- copies the files git knows into ``build/sanity/<core>/ansible_collections/oneclickvirt/virt``: ansible-test needs
  a real folder of that shape (a symlink is resolved and fails), and a plain copy would drag in venvs and lab state;
- writes a stand-in for pip's bootstrap script, which ansible-test downloads from a host that is not reachable here;
- makes sure pip's own configuration carries what the environment gives pip (the CA certificate in ``PIP_CERT``),
  because ansible-test passes no PIP_* variables to the pip it runs in its venvs;
- runs ``ansible-test sanity --venv --python 3.11`` and prints a short report.

Each sanity test gets its own venv under ``~/.ansible/test/venv/<test>/<python>/<hash>``, where the hash covers the
exact pinned requirements. Those venvs are reused by later runs, and shared between ansible-core lines exactly when
both lines pin the same requirements, which is the only sharing that is safe; nothing here needs to add to it.
Only ansible-test's own controller venv for ``--venv`` lives in the copy (``tests/output/.tmp/delegation``) and
is rebuilt with it each run: about 5 s, and ansible-test would not notice it going stale after a core upgrade.
"""

import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection_tree import CORE_VENVS, ROOT, copy_collection, venv_bin  # noqa: E402

PYTHON_VERSION = '3.11'
STAND_IN_MARK = '# oneclickvirt.virt get-pip stand-in'

STAND_IN = f'''{STAND_IN_MARK} (written by tools/sanity.py; safe to delete).
"""Stand-in for pip's get-pip.py: ansible-test downloads that from a host this machine cannot reach."""
import ensurepip
import os
import subprocess
import sys

# Installs the pip (and setuptools) wheels that ship with Python into this venv, without the network.
ensurepip.bootstrap()
# ensurepip sets PIP_CONFIG_FILE to /dev/null and leaves it set; that would hide the machine's pip
# configuration (its CA certificate and index settings) from the install below.
os.environ.pop('PIP_CONFIG_FILE', None)
# The real get-pip.py understands --no-setuptools / --no-wheel; `pip install` does not.
args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install'] + args))
'''

# pip settings that decide whether pip can reach its index at all. When the environment sets one of them
# (PIP_CERT here) and pip's configuration files do not, pip inside ansible-test's venvs cannot download.
INDEX_SETTINGS = ('cert', 'client-cert', 'index-url', 'extra-index-url', 'trusted-host', 'proxy')


def pip_versions(core):
    """The pip versions this core's ansible-test bootstraps into its venvs (read from its own source)."""
    source = CORE_VENVS[core] / 'lib' / f'python{PYTHON_VERSION}' / 'site-packages' / 'ansible_test' / '_internal' / 'python_requirements.py'
    versions = set(re.findall(r"""\bpip\s*=\s*['"]([0-9][0-9.]*)['"]""", source.read_text(encoding='utf-8')))
    if not versions:
        sys.exit(f'cannot find the pip version ansible-test wants in {source}')
    return sorted(versions)


def write_stand_ins(core):
    """Write the get-pip stand-in where ansible-test looks for a cached bootstrap script."""
    cache = Path.home() / '.ansible' / 'test' / 'cache'
    cache.mkdir(parents=True, exist_ok=True)
    for version in pip_versions(core):
        path = cache / f'get_pip_{version.replace(".", "_")}.py'
        # A real get-pip.py someone saved there works too: leave it alone.
        if path.exists() and not path.read_text(encoding='utf-8', errors='replace').startswith(STAND_IN_MARK):
            print(f'sanity: keeping {path} (not ours)')
            continue
        if not path.exists() or path.read_text(encoding='utf-8') != STAND_IN:
            path.write_text(STAND_IN, encoding='utf-8')


def pip_env_name(key):
    """The environment variable pip reads for a configuration key: cert -> PIP_CERT, index-url -> PIP_INDEX_URL."""
    return 'PIP_' + key.upper().replace('-', '_')


def ensure_pip_config(core):
    """Copy index settings that only the environment gives pip into the user's pip configuration."""
    wanted = {key: os.environ[pip_env_name(key)] for key in INDEX_SETTINGS if os.environ.get(pip_env_name(key))}
    if not wanted:
        return
    python = venv_bin(core, 'python')
    # Ask pip what it sees with the environment ansible-test gives it: no PIP_* variables at all.
    bare_env = {name: value for name, value in os.environ.items() if not name.startswith('PIP_')}
    listing = subprocess.run([python, '-m', 'pip', 'config', 'list'], env=bare_env,
                             capture_output=True, text=True, check=True).stdout
    configured = {line.split('=', 1)[0].split('.', 1)[-1] for line in listing.splitlines() if '=' in line}
    for key, value in wanted.items():
        if key in configured:
            continue
        subprocess.run([python, '-m', 'pip', 'config', '--user', 'set', f'global.{key}', value],
                       env=bare_env, check=True)
        print(f'sanity: added {key} = {value} to the user pip configuration '
              f'(ansible-test does not pass {pip_env_name(key)} on)')


def report(core, output, returncode, seconds, file_count):
    """A few lines that say what ran and what failed, after ansible-test's own output."""
    ran = re.findall(r'^Running sanity test "([^"]+)"', output, re.M)
    failed = re.findall(r'^ERROR: Found \d+ ([\w.-]+) issue', output, re.M)
    skipped = re.findall(r'^WARNING: Skipping sanity test "([^"]+)"', output, re.M)
    print()
    print(f'=== sanity on ansible-core {core}: {"PASSED" if returncode == 0 else f"FAILED (exit {returncode})"}'
          f' in {seconds:.0f} s; {file_count} files, {len(ran)} tests run')
    if skipped:
        print(f'    skipped by ansible-test: {", ".join(skipped)}')
    if failed:
        print(f'    failed: {", ".join(failed)}')
    elif returncode:
        print('    ansible-test failed before or outside a test: see its output above')


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in CORE_VENVS:
        sys.exit(f'usage: {sys.argv[0]} {{{"|".join(CORE_VENVS)}}} [ansible-test sanity options]')
    core, extra = sys.argv[1], sys.argv[2:]
    ansible_test = venv_bin(core, 'ansible-test')

    # Two runs at once (two cores under pytest-xdist, a second checkout) would build the same cached venv
    # under ~/.ansible/test/venv together and break it; ansible-test itself does not lock.
    lock_path = Path.home() / '.ansible' / 'test' / 'oneclickvirt-sanity.lock'
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(lock_path, 'w', encoding='utf-8')  # pylint: disable=consider-using-with  # held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print('sanity: another sanity run holds the lock; waiting for it', flush=True)
        waiting = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f'sanity: waited {time.monotonic() - waiting:.0f} s for the lock', flush=True)
    started = time.monotonic()

    tree, file_count = copy_collection(ROOT / 'build' / 'sanity' / core)
    # ansible-test lists content with git when it finds a .git folder above it. The copy lies inside the
    # checkout, whose .gitignore ignores build/: ansible-test would see no files at all. A repository of its
    # own in the copy makes git list the copied files (and its copied .gitignore hides tests/output).
    subprocess.run(['git', 'init', '--quiet', str(tree)], check=True)
    write_stand_ins(core)
    ensure_pip_config(core)

    # --color: colour codes only make sense on a terminal; pytest and CI logs get plain text.
    color = 'yes' if sys.stdout.isatty() else 'no'
    command = [str(ansible_test), 'sanity', '--venv', '--python', PYTHON_VERSION, '--color', color] + extra
    print(f'sanity: {" ".join(command)}\n        in {tree}', flush=True)
    lines = []
    with subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors='replace') as process:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    report(core, ''.join(lines), process.returncode, time.monotonic() - started, file_count)
    return process.returncode


if __name__ == '__main__':
    sys.exit(main())
