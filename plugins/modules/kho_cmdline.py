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
  - Values are validated by full match before anything is read for writing, and written in canonical form
    (C(kho=on) or C(kho=off); sizes as the shortest memparse spelling, such as V(4K) for V(4096)); a bad value fails
    naming the option, the value and the valid form. A value already on the line that means the same and is spelled
    safely is kept as written, so a task is idempotent across spellings.
  - Every token written passes a last gate at the writer, independent of the validation (letters, digits and
    C(_.,:%+=-) only, so never a quote, C($), backtick, C(;), C(|), C(&), redirection, bracket, brace,
    backslash, whitespace or control character), and the resulting line must fit the kernel's C(COMMAND_LINE_SIZE)
    (2048 bytes on x86). A file that C(update-grub) sources as root never receives shell syntax from this module.
  - Backends, chosen with O(bootloader) or detected. V(grub) judges the line C(grub-mkconfig) builds, that is
    C(GRUB_CMDLINE_LINUX) then C(GRUB_CMDLINE_LINUX_DEFAULT) as C(sh) computes them after sourcing O(grub_file) and
    every C(grub.d/*.cfg) drop-in beside it, in that order (line breaks are C(\n) only; C($NAME) references to a
    variable assigned plainly before are expanded). The parameters are written to the last C(GRUB_CMDLINE_LINUX)
    assignment the shell runs; a KHO parameter anywhere else is a conflict, handled as
    O(grub_conflicts) says. Then C(update-grub), or C(grub2-mkconfig -o) / C(grub-mkconfig -o) with O(grub_cfg), runs,
    and the generated C(grub.cfg)'s C(linux) lines that C(/etc/grub.d/10_linux) built from the variables are checked
    for the parameters (RV(grub_cfg)); a C(grub.cfg) not written, without such a line, or with one that lacks them
    fails the task, and every file, C(grub.cfg) included, is put back as it was.
  - With V(grub), only these forms of the two variables are rewritten, each alone on its line (leading blanks,
    C(export) and a trailing comment allowed) - C(NAME="..."), C(NAME='...') and an unquoted value of letters,
    digits and C(_.,:%+=/@-) only. Any other way of setting them (an unquoted value with other characters or
    escapes, several assignments or commands on one line, C(readonly), an assignment inside C(if), C(case), a loop,
    a function, a group, a list joined by C(&&), C(||) or C(|) (also across a line break after the operator) or a
    here-document, a command substitution, C(${X:-...}), a variable whose value cannot be known, a continuation
    line, a value that is not UTF-8) fails before any change, naming the file, the line and the form to use
    (C(docs/grub-files.md) in the collection has the table). So does what the module does not model anywhere in the
    files - a command run in the background (C(&)); C(eval), C(.), C(source), C(command) or C(builtin) as any word;
    C(return), C(exit), C(exec), C(alias), C(set), C(trap), C(let), bash's C(function) and their kin as a command;
    a word of C(export), C(readonly), C(unset) or C(read) that is not a plain C(NAME) or C(NAME=value) (such as
    C(export GRUB_CMDLINE_LI""NUX=...)); arithmetic expansion; what makes sh stop sourcing the file. The files
    planned are parsed again before they are written, and the task fails unless every other line is byte for byte
    the same and each variable computes what it did plus the parameters asked.
  - V(kernel-install) edits C(/etc/kernel/cmdline), then runs C(kernel-install add) for each kernel under
    C(/usr/lib/modules); if one fails, the file is restored and the entries already regenerated are regenerated again
    from it (the error names any that could not be). V(grubby) reads every entry C(grubby --info) returns for
    O(grubby_kernel), plans each one (RV(entries)) and updates only those that change, by index, with
    C(--remove-args) and C(--args).
  - Files are written atomically (a temporary file in the same directory, same owner, mode and SELinux context,
    fsynced, renamed, the directory fsynced); a symbolic link is never replaced (O(follow_symlinks)). The
    regeneration runs only when a file changed. A change that spans several files is all or nothing - if writing
    any of them, the regeneration or its check fails, every file already written is restored byte for byte and the
    task fails naming what failed and that the files are as they were.
author:
  - kexec.kho contributors (@kexec-kho)
extends_documentation_fragment:
  - kexec.kho._host.group
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
        boolean; booleans are refused with that hint. The other spellings the kernel reads as a boolean, by full
        match and in any case (V(y), V(yes), V(1), V(true), V(enable), V(n), V(no), V(0), V(false), V(disable)),
        are accepted and written as V(on) or V(off).
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
      - Which spelling of the scratch size to write, with O(scratch); the other spelling is removed.
      - V(auto) writes the one the kernel that boots next parses (7.4 renames C(kho_scratch=) to C(kho_bootmem=)),
        read from that kernel's image (the parameter names in its decompressed payload), or from its release where
        the image cannot be read (7.4 and later, C(kho_bootmem)). Where neither tells, V(auto) keeps the spelling
        the line has, else V(kho_scratch).
      - An explicit spelling that the next kernel would ignore is replaced by the one it parses, and reported in
        RV(next_kernel).
      - The area's size is set by the first kernel of a kexec chain and reused by the next ones (7.x), so a new value
        takes effect at the next cold boot.
    type: str
    default: auto
    choices: [auto, kho_scratch, kho_bootmem]
  next_kernel:
    description:
      - The image of the kernel that boots next, read to choose O(scratch_param). By default, C(grubby
        --default-kernel) where grubby is installed, else the newest C(/boot/vmlinuz-*) by release (a C(-rc) before
        its final release).
    type: path
    version_added: 0.3.0
  reserve_mem:
    description:
      - The C(reserve_mem=SIZE:ALIGN:LABEL) regions, in order; they replace every C(reserve_mem=) on the line.
        An empty list removes them all; leaving the option out leaves them alone.
      - At most 8 regions, labels unique.
    type: list
    elements: dict
    suboptions:
      size:
        description: Size, a number (decimal, V(0x) hex or V(0) octal) with an optional K/M/G/T/P/E suffix, larger
          than zero and below 2^64; written in canonical form (V(1048576) as V(1M)).
        type: raw
        required: true
      align:
        description: Alignment, same form; the kernel raises anything under a cache line to one.
        type: raw
        default: 0
      label:
        description: The region's name, 1 to 15 of C(A-Z a-z 0-9 _ . + -) (the kernel keeps 15 characters), as used
          by C(ramoops.mem_name=) or C(trace_instance=).
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
  grub_conflicts:
    description:
      - With O(bootloader=grub), what to do with a C(kho=), C(kho_scratch=)/C(kho_bootmem=) or C(reserve_mem=) found
        outside the assignment this module writes (in C(GRUB_CMDLINE_LINUX_DEFAULT), an earlier
        C(GRUB_CMDLINE_LINUX), or a C(grub.d) drop-in), where it would override or repeat what is asked.
      - V(remove) takes it out, keeping a backup of every file touched other than O(grub_file) (and of O(grub_file)
        with O(backup)); V(fail) changes nothing and names each one with its file, line and variable. RV(conflicts)
        lists them either way. O(state=absent) always removes them.
    type: str
    version_added: 0.2.0
    default: remove
    choices: [remove, fail]
  follow_symlinks:
    description:
      - When a file to write is a symbolic link, V(true) writes the file it points to (the link stays a link);
        V(false) refuses before anything is written.
    type: bool
    version_added: 0.2.0
    default: true
  regenerate:
    description: Run the boot loader's regeneration after a change to the file (with GRUB, then check the
      C(grub.cfg) it wrote, RV(grub_cfg)).
    type: bool
    default: true
  backup:
    description: Keep a timestamped copy of the file, with its mode, before changing it (drop-ins whose conflicts are
      removed are always backed up).
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
next_kernel:
  description:
    - With O(scratch), the kernel that boots next as read to choose the spelling (C(path), C(release),
      C(readable)), the spelling written (C(scratch_param)), and C(replaced) where an explicit O(scratch_param) was
      replaced because that kernel would ignore it.
  returned: with O(scratch) and O(state=present)
  type: dict
  sample: {path: /boot/vmlinuz-7.4.0, release: 7.4.0, readable: true, scratch_param: kho_bootmem, replaced: null}
  version_added: 0.3.0
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
  description: The configured command line before the task; for GRUB the effective one (C(GRUB_CMDLINE_LINUX) then
    C(GRUB_CMDLINE_LINUX_DEFAULT) as C(sh) computes them after every file is sourced; also the last entry of the
    diff), for grubby that of the first entry (see RV(entries)).
  returned: success
  type: str
cmdline_after:
  description: The configured command line after the task (in check mode, what it would be), judged the same way.
  returned: success
  type: str
conflicts:
  description: KHO parameters found outside the place this module writes (GRUB), each with where it stood; removed
    with O(grub_conflicts=remove).
  returned: success
  type: list
  elements: dict
  sample: [{file: /etc/default/grub, line: 6, variable: GRUB_CMDLINE_LINUX_DEFAULT, parameters: [kho=off]}]
entries:
  description: grubby only, every entry C(grubby --info) returned, with its C(index), C(kernel), C(title),
    C(before) and C(after) arguments and whether it C(changed).
  returned: when O(bootloader=grubby)
  type: list
  elements: dict
grub_cfg:
  description:
    - GRUB only, after a regeneration; the C(path), the number of C(linux) lines checked (C(entries), those of
      C(/etc/grub.d/10_linux), or every one in a file without C(### BEGIN) sections) and the titles of those that do
      not carry the KHO parameters asked for (C(missing)), always empty here, since a non-empty one fails the task
      and puts every file back.
  returned: when GRUB regenerated
  type: dict
  sample: {path: /boot/grub/grub.cfg, entries: 2, missing: []}
running_cmdline:
  description: The running kernel's command line (C(/proc/cmdline)).
  returned: success
  type: str
reboot_required:
  description: The KHO parameters configured differ from those the running kernel was booted with.
  returned: success
  type: bool
backup_file:
  description: The backup of the main file made, if any.
  returned: when a backup was made
  type: str
backup_files:
  description: Every backup made, by the file it copies.
  returned: when a file was written
  type: dict
regenerated:
  description: The regeneration commands run, as argument lists.
  returned: success
  type: list
  elements: list
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kexec.kho.plugins.module_utils._kho import bootloader, files, host, image
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import GrammarError, apply_kho, check_request, kho_signature
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import KhoHost
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths


def diffs(plan: dict) -> list:
    """One diff per file written, or per grubby entry changed; the command line where nothing changes."""
    out = [{"before": (old or b"").decode(errors="replace"), "after": new.decode(errors="replace"), "before_header": path,
            "after_header": path} for path, (old, new) in plan["files"].items()]
    out += [{"before": e["before"] + "\n", "after": e["after"] + "\n", "before_header": f"grubby entry {e['index']}",
             "after_header": f"grubby entry {e['index']}"} for e in plan.get("entries", []) if e["changed"]]
    header = f"{plan['target'] or 'grubby'} (command line)"
    return out + [{"before": plan["before"] + "\n", "after": plan["after"] + "\n", "before_header": header,
                   "after_header": header}]


def default_next_kernel(module) -> str | None:
    """The boot loader's default kernel (grubby), else the newest /boot/vmlinuz-*."""
    grubby = module.get_bin_path("grubby")
    if grubby:
        rc, out, _err = module.run_command([grubby, "--default-kernel"])
        if rc == 0 and out.strip().startswith("/"):
            return out.strip()
    return image.newest_in_boot()


def next_kernel(module) -> dict:
    """The kernel that boots next and the scratch spelling it parses; an explicit spelling it would ignore replaced."""
    path = module.params["next_kernel"] or default_next_kernel(module)
    target = image.inspect(path) if path else {"readable": False, "release": None}
    parsed = image.scratch_spelling(target)
    asked = module.params["scratch_param"]
    written = parsed or asked
    return {"path": path, "release": target.get("release"), "readable": target.get("readable"), "scratch_param": written,
            "replaced": asked if asked not in ("auto", written) else None}


ARGUMENT_SPEC = {
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "kho": {"type": "raw"},
    "scratch": {"type": "str"},
    "scratch_param": {"type": "str", "default": "auto", "choices": ["auto", "kho_scratch", "kho_bootmem"]},
    "next_kernel": {"type": "path"},
    "reserve_mem": {"type": "list", "elements": "dict", "options": {
        "size": {"type": "raw", "required": True},
        "align": {"type": "raw", "default": 0},
        "label": {"type": "str", "required": True},
    }},
    "bootloader": {"type": "str", "default": "auto", "choices": ["auto", "grub", "grubby", "kernel-install"]},
    "grub_file": {"type": "path", "default": paths.GRUB_DEFAULT},
    "grub_cfg": {"type": "path"},
    "kernel_cmdline_file": {"type": "path", "default": paths.KERNEL_CMDLINE},
    "grubby_kernel": {"type": "str", "default": "ALL"},
    "grub_conflicts": {"type": "str", "default": "remove", "choices": ["remove", "fail"]},
    "follow_symlinks": {"type": "bool", "default": True},
    "regenerate": {"type": "bool", "default": True},
    "backup": {"type": "bool", "default": False},
    **host.GROUP_SPEC,  # the action group's options, accepted and ignored (the doc fragment _host.group)
}


def decide(module) -> tuple:
    """The request, validated before anything is read: (the edit of a line, the clean-up of a line, next_kernel)."""
    p = module.params
    bootloader.check_option_numbers(p)
    wanted = check_request("on" if p["kho"] is None and p["state"] == "present" else p["kho"],
                           p["scratch"], p["reserve_mem"])
    nxt = next_kernel(module) if wanted["scratch"] is not None and p["state"] == "present" else None
    spelling = nxt["scratch_param"] if nxt else p["scratch_param"]

    def edit(line):
        return apply_kho(line, p["state"], wanted["kho"], wanted["scratch"], spelling, wanted["reserve_mem"])

    def clean(line):
        return apply_kho(line, "absent")
    return edit, clean, nxt


def refuse_grub_conflicts(module, plan: dict) -> None:
    """GRUB: with grub_conflicts=fail, KHO parameters in the other variables or drop-ins are refused."""
    p = module.params
    if plan["conflicts"] and p["grub_conflicts"] == "fail" and p["state"] == "present":
        where = "; ".join(f"{c['file']} line {c['line']} {c['variable']}: {' '.join(c['parameters'])}"
                          for c in plan["conflicts"])
        module.fail_json(msg=f"KHO parameters outside {plan['target']}'s GRUB_CMDLINE_LINUX would override or "
                             f"repeat what is asked: {where}; remove them, or set grub_conflicts: remove",
                         conflicts=plan["conflicts"])


def report(module, backend, plan: dict, running: str, nxt: dict | None) -> dict:
    """The answer for the plan, before anything is written (check and diff mode stop here)."""
    result = {"bootloader": backend.name, "file": plan["target"], "cmdline_before": plan["before"],
              "cmdline_after": plan["after"], "running_cmdline": running, "regenerated": [],
              "conflicts": plan["conflicts"], "changed": bool(plan["files"] or plan.get("commands")),
              "reboot_required": kho_signature(plan["after"]) != kho_signature(running)}
    if nxt:
        result["next_kernel"] = nxt
    if "entries" in plan:
        result["entries"] = plan["entries"]
    if module._diff:
        result["diff"] = diffs(plan)
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        edit, clean, nxt = decide(module)
    except GrammarError as exc:
        module.fail_json(msg=str(exc))
    running = KhoHost().cmdline()
    try:
        backend = bootloader.select(module, running)
        plan = backend.plan(edit, clean)
        refuse_grub_conflicts(module, plan)
        result = report(module, backend, plan, running, nxt)
        if result["changed"] and not module.check_mode:
            result.update(backend.apply(plan))  # all or nothing, the generated grub.cfg checked
    except (bootloader.BootloaderError, files.Refused, GrammarError) as exc:
        module.fail_json(msg=str(exc))
    except PermissionError as exc:
        module.fail_json(msg=f"{exc}: changing the boot loader configuration needs root, run with become: true")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
