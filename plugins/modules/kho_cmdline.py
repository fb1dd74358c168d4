#!/usr/bin/python
# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kho_cmdline
short_description: Persist the Kexec HandOver boot parameters in the boot loader
version_added: 0.1.0
description:
  - Manages C(kho=), the KHO scratch size (C(kho_scratch=), or C(kho_bootmem=) as later kernels spell it) and
    C(reserve_mem=) regions on the kernel command line that the boot loader passes at the next boot.
  - Every other parameter on the line, their order and their quoting are kept exactly.
  - Values are checked with the kernel's own grammar before anything is touched; a bad value fails with
    the value and the valid form.
  - Backends, chosen with O(bootloader) or detected. V(grub) edits C(GRUB_CMDLINE_LINUX) in O(grub_file), then
    runs C(update-grub), or C(grub2-mkconfig -o) / C(grub-mkconfig -o) with O(grub_cfg). V(kernel-install) edits
    C(/etc/kernel/cmdline), then runs C(kernel-install add) for each kernel under C(/usr/lib/modules). V(grubby)
    runs C(grubby --update-kernel=) with C(--remove-args) and C(--args).
  - Files are written atomically (a temporary file in the same directory, same owner and mode, renamed), with an
    optional backup. The regeneration runs only when the file changed; if it fails, the previous file is restored
    byte for byte and the task fails.
author:
  - kexec.kho contributors (@kexec-kho)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  state:
    description:
      - V(present) sets the parameters given; parameters not given are left as they are.
      - V(absent) removes C(kho=), C(kho_scratch=), C(kho_bootmem=) and every C(reserve_mem=).
    type: str
    default: present
    choices: [present, absent]
  kho:
    description:
      - The value of C(kho=). Quote it in YAML, V('on') or V('off'), since YAML reads a bare C(on) as a
        boolean; booleans are refused with that hint. Other kernel booleans (V(y), V(1), V(n), V(0)) are kept
        as written.
      - Defaults to V(on) with O(state=present).
    type: raw
  scratch:
    description:
      - The KHO scratch size, as the kernel parses it; either V(N%) (a scale of the boot-time memblock use, the
        kernel's default being 200%) or exactly three sizes V(LOWMEM,GLOBAL,PERNODE), each a number with an
        optional K, M, G, T, P or E suffix, adding up to more than zero, for example V(16M,512M,256M).
    type: str
  scratch_param:
    description:
      - Which spelling to write. V(auto) keeps the one the line already has, else V(kho_scratch) (the one every
        released kernel knows; V(kho_bootmem) is the 7.4 development cycle's name). The other spelling is removed.
    type: str
    default: auto
    choices: [auto, kho_scratch, kho_bootmem]
  reserve_mem:
    description:
      - The C(reserve_mem=SIZE:ALIGN:LABEL) regions, in order; they replace every C(reserve_mem=) on the line.
        An empty list removes them all; leaving the option out leaves them alone.
      - At most 8 regions, labels unique.
    type: list
    elements: dict
    suboptions:
      size:
        description: Size, a number with an optional K/M/G/T/P/E suffix, larger than zero. Quote it.
        type: raw
        required: true
      align:
        description: Alignment, same form; the kernel raises anything under a cache line to one.
        type: raw
        default: 0
      label:
        description: The region's name (1 to 15 printable characters, no spaces, colons, quotes or backslashes),
          as used by C(ramoops.mem_name=) or C(trace_instance=).
        type: str
        required: true
  bootloader:
    description: The backend; V(auto) picks grubby if installed, else kernel-install if O(kernel_cmdline_file) exists, else GRUB.
    type: str
    default: auto
    choices: [auto, grub, grubby, kernel-install]
  grub_file:
    description: The GRUB defaults file.
    type: path
    default: /etc/default/grub
  grub_cfg:
    description:
      - The C(grub.cfg) to write with C(grub2-mkconfig -o) / C(grub-mkconfig -o). When set, it is used even where
        C(update-grub) exists. Default, the first of C(/boot/grub2/grub.cfg) and C(/boot/grub/grub.cfg) that exists.
    type: path
  kernel_cmdline_file:
    description: The kernel-install command line file.
    type: path
    default: /etc/kernel/cmdline
  grubby_kernel:
    description: What C(grubby --update-kernel=) updates (V(ALL), V(DEFAULT) or a kernel path).
    type: str
    default: ALL
  regenerate:
    description: Run the boot loader's regeneration after a change to the file.
    type: bool
    default: true
  backup:
    description: Keep a timestamped copy of the file, with its mode, before changing it.
    type: bool
    default: false
notes:
  - grubby is not packaged by Debian, where this collection is tested; its backend is covered by tests of the
    commands it builds and of recorded C(grubby --info) output.
seealso:
  - module: kexec.kho.kho_facts
"""

EXAMPLES = r"""
- name: Enable KHO with a pstore region
  kexec.kho.kho_cmdline:
    kho: "on"
    reserve_mem:
      - {size: 1M, align: 4096, label: oops}
  become: true
  register: boot

- name: Reboot only when the running kernel lacks the parameters
  ansible.builtin.reboot:
  when: boot.reboot_required
  become: true

- name: Set the scratch size, in the kernel's three-size form
  kexec.kho.kho_cmdline:
    scratch: 16M,512M,256M
  become: true

- name: Remove every KHO parameter
  kexec.kho.kho_cmdline:
    state: absent
  become: true
"""

RETURN = r"""
bootloader:
  description: The backend used.
  returned: success
  type: str
  sample: grub
file:
  description: The file edited (V(null) for grubby).
  returned: success
  type: str
  sample: /etc/default/grub
cmdline_before:
  description: The configured command line before the task.
  returned: success
  type: str
cmdline_after:
  description: The configured command line after the task (in check mode, what it would be).
  returned: success
  type: str
running_cmdline:
  description: The running kernel's command line (C(/proc/cmdline)).
  returned: success
  type: str
reboot_required:
  description: The KHO parameters configured differ from those the running kernel was booted with.
  returned: success
  type: bool
backup_file:
  description: The backup made, if any.
  returned: when a backup was made
  type: str
regenerated:
  description: The regeneration commands run, as argument lists.
  returned: success
  type: list
  elements: list
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kexec.kho.plugins.module_utils._kho import bootloader
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import GrammarError, apply_kho, check_request, kho_signature
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import KhoHost


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "kho": {"type": "raw"},
            "scratch": {"type": "str"},
            "scratch_param": {"type": "str", "default": "auto", "choices": ["auto", "kho_scratch", "kho_bootmem"]},
            "reserve_mem": {"type": "list", "elements": "dict", "options": {
                "size": {"type": "raw", "required": True},
                "align": {"type": "raw", "default": 0},
                "label": {"type": "str", "required": True},
            }},
            "bootloader": {"type": "str", "default": "auto", "choices": ["auto", "grub", "grubby", "kernel-install"]},
            "grub_file": {"type": "path", "default": "/etc/default/grub"},
            "grub_cfg": {"type": "path"},
            "kernel_cmdline_file": {"type": "path", "default": "/etc/kernel/cmdline"},
            "grubby_kernel": {"type": "str", "default": "ALL"},
            "regenerate": {"type": "bool", "default": True},
            "backup": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        wanted = check_request("on" if p["kho"] is None and p["state"] == "present" else p["kho"],
                               p["scratch"], p["reserve_mem"])
    except GrammarError as exc:
        module.fail_json(msg=str(exc))
    running = KhoHost().cmdline()
    try:
        backend = bootloader.select(module, running)
        before = backend.read()
        after = apply_kho(before, p["state"], wanted["kho"], wanted["scratch"], p["scratch_param"],
                          wanted["reserve_mem"])
        result = {"bootloader": backend.name, "file": backend.path, "cmdline_before": before,
                  "cmdline_after": after, "running_cmdline": running, "regenerated": [],
                  "changed": before != after,
                  "reboot_required": kho_signature(after) != kho_signature(running)}
        if module._diff:
            result["diff"] = {"before": before + "\n", "after": after + "\n",
                              "before_header": f"{backend.path or 'grubby'} (command line)",
                              "after_header": f"{backend.path or 'grubby'} (command line)"}
        if result["changed"] and not module.check_mode:
            result.update(backend.write(before, after))
    except bootloader.BootloaderError as exc:
        module.fail_json(msg=str(exc))
    except PermissionError as exc:
        module.fail_json(msg=f"{exc}: changing the boot loader configuration needs root, run with become: true")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
