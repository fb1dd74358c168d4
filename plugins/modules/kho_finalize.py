#!/usr/bin/python
# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kho_finalize
short_description: Finalize or abort the Kexec HandOver state where the kernel has one
version_added: 0.1.0
description:
  - On finalize-era kernels (6.16 to about 7.0, where C(kho/out/finalize) exists), moves the kernel into the
    KHO finalization phase (O(state=finalized)) or back out of it (O(state=aborted)).
  - Reads the current value first and writes only a real change, since the 6.16 to 6.18 kernels refuse to
    write the value the file already holds.
  - Kernels of the second finalize form (6.19 to about 7.0) have no abort and refuse C(0) with C(EINVAL);
    there the module fails saying so, and that unloading the kexec image (M(kexec.kho.kho_kexec)
    O(kexec.kho.kho_kexec#module:state=unloaded)) is the way back.
  - On live-era kernels (no finalize file) both states hold already; the module changes nothing and
    returns RV(finalize_supported=false).
author:
  - kexec.kho contributors (@kexec-kho)
extends_documentation_fragment:
  - kexec.kho._host
  - kexec.kho._host.attributes
  - ansible.builtin.action_common_attributes
options:
  state:
    description:
      - V(finalized) writes C(1) to C(kho/out/finalize) unless it holds C(1) already.
      - V(aborted) writes C(0) unless it holds C(0) already.
    type: str
    required: true
    choices: [finalized, aborted]
notes:
  - The kernel's 6.16 usage page says C(kho/out/active) for the abort; no kernel has that file. The
    module uses C(kho/out/finalize) for both transitions.
  - On a 6.16 to 6.18 kernel the handover data is put into the kexec image at load time only when already
    finalized, so finalize before M(kexec.kho.kho_kexec) loads.
seealso:
  - module: kexec.kho.kho_facts
  - module: kexec.kho.kho_kexec
"""

EXAMPLES = r"""
- name: Finalize before the load (a no-op on live-era kernels)
  kexec.kho.kho_finalize:
    state: finalized
  become: true

- name: Back out
  kexec.kho.kho_finalize:
    state: aborted
  become: true
"""

RETURN = r"""
interface:
  description: The KHO interface generation, V(finalize) or V(live).
  returned: success
  type: str
  sample: finalize
finalize_supported:
  description: The kernel has a finalize state (C(kho/out/finalize) exists).
  returned: success
  type: bool
before:
  description: The finalize state before the task; V(null) on live-era kernels.
  returned: success
  type: bool
after:
  description: The finalize state after the task (in check mode, what it would be); V(null) on live-era kernels.
  returned: success
  type: bool
fdt:
  description: C(size) and C(sha256) of C(kho/out/fdt) after the task, when the kernel exposes it.
  returned: on finalize-era kernels
  type: dict
  sample: {"size": 353, "sha256": "65086e05519fb8ed868ba28e401723e02b778ebff6abdd6843d99e33de5dba11"}
msg:
  description: What was done, or why nothing was.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kexec.kho.plugins.module_utils._kho import host
from ansible_collections.kexec.kho.plugins.module_utils._kho.finalize import FinalizeError, transition


def main():
    module = AnsibleModule(
        argument_spec={**host.ARGUMENT_SPEC, "state": {"type": "str", "required": True,
                                                       "choices": ["finalized", "aborted"]}},
        supports_check_mode=True,
    )
    kho = host.from_params(module.params)
    try:
        mounted = host.ensure_debugfs(module, kho)
        if mounted and module.check_mode:
            module.exit_json(changed=True, msg=f"would mount debugfs at {kho.debugfs}, then read the state")
        result = transition(kho, module.params["state"] == "finalized", module.check_mode)
    except host.NeedsRoot as exc:
        module.fail_json(msg=str(exc), path=exc.path)
    except FinalizeError as exc:
        module.fail_json(msg=str(exc), interface=kho.generation())
    result["changed"] = result["changed"] or mounted
    module.exit_json(**result)


if __name__ == "__main__":
    main()
