# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_facts' read on the host without AnsibleModule: kho_kexec's facts_after runs it on the new boot.

Importing ``ansible.module_utils.basic`` from an AnsiballZ payload is most of a module run's cost on a slow host
(3 to 4 s under emulation); this reads the same facts, by the same code (facts.read), with the standard library
only.  The controller sends these sources with the command (plugin_utils/_facts_after.py) and decodes the answer as
kho_facts' action does.
"""

from __future__ import annotations

import json
import os
import subprocess

from ansible_collections.kexec.kho.plugins.module_utils._kho import facts, host

COMMAND_SECONDS = 10  # each systemctl or systemd-analyze call (four at most: within _facts_after.READ_SECONDS)
MAX_ANSWER = 24 << 20  # characters printed at most: the blobs' own cap (16 MiB of base64) and the rest


def run_command(argv: list) -> tuple:
    """AnsibleModule.run_command's (rc, stdout, stderr), for argument lists, in the C locale, bounded in time."""
    env = dict(os.environ, LANG="C", LC_ALL="C", LC_MESSAGES="C")
    try:
        # No AnsibleModule here (the point of this module), so not its run_command: an argument list, no shell.
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env, check=False,  # pylint: disable=ansible-bad-function
                              timeout=COMMAND_SECONDS, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def answer(params: dict) -> str:
    """One JSON line: facts.read's answer for ``params`` (the internal option's roots, pstore_search), or {"error": why}."""
    try:
        roots = {k: os.path.expanduser(os.path.expandvars(v)) for k, v in host.internal(params).items() if k in host.ROOTS}
        kho = host.from_params({host.INTERNAL: roots})  # as a "path" option is, on the host
        out = facts.read(kho, True, params.get("pstore_search"), run_command)
    except (host.NeedsRoot, OSError, ValueError, KeyError, TypeError) as exc:
        return json.dumps({"error": f"reading KHO state failed: {exc}"})
    text = json.dumps(out, separators=(",", ":"))
    if len(text) > MAX_ANSWER:
        return json.dumps({"error": f"the facts are {len(text)} characters, more than the {MAX_ANSWER} sent at most"})
    return text
