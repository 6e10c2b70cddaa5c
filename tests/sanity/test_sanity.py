"""ansible-test sanity on every supported ansible-core line, through tools/sanity.py (started by the
sanity_background plugin in the background when the run begins)."""

import pytest


@pytest.mark.parametrize('core', ['2.19', '2.18'])
def test_ansible_test_sanity(core, sanity_run):
    returncode, output = sanity_run(core)
    if returncode != 0:
        # The ERROR lines first, since pip's install chatter can bury them in the full output below.
        errors = [line for line in output.splitlines() if line.startswith(('ERROR:', 'FATAL:'))]
        pytest.fail(f'ansible-test sanity on ansible-core {core} exited {returncode}\n'
                    + '\n'.join(errors) + '\n\n--- full output ---\n' + output, pytrace=False)
