#!/usr/bin/python
# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kho_facts
short_description: Gather Kexec HandOver (KHO) facts from the running kernel
version_added: 0.1.0
description:
  - Reads the running kernel's KHO state on the managed host (debugfs, sysfs, procfs, the kernel log) and
    returns it as the fact C(ansible_facts.kho).
  - Tells whether the kernel has KHO, whether it is enabled on this boot, which interface generation it
    offers (V(finalize) for the 6.16 to 7.0 kernels with C(kho/out/finalize), V(live) for later ones), and
    what the previous kernel handed over.
  - The module only reads files on the host (it writes only the lock file, with O(lock), and mounts debugfs, with
    O(mount_debugfs)) and returns the raw handover blobs; the action plugin of the
    same name decodes them on the controller with C(pyfdt), after a strict structural check of each blob.
    A corrupt, truncated or hostile blob becomes an entry in RV(ansible_facts.kho.errors), never a failure, unless
    decoding all of one host's blobs would go over the controller's budget per host (64 sub-blobs, 32 MiB, 8,192 FDT
    tokens, and bounded names and values); then the task fails for that host, saying why in
    RV(ansible_facts.kho.over_budget).
  - Numbers in KHO blobs are in the CPU's byte order; the host's order is used.
author:
  - kexec.kho contributors (@kexec-kho)
extends_documentation_fragment:
  - kexec.kho._host
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
    details: In check mode debugfs is not mounted and no lock is written; C(changed) says whether either would have been.
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
options:
  kernel_log:
    description:
      - Read the KHO-related lines of the kernel log from C(/dev/kmsg) into RV(ansible_facts.kho.log).
    type: bool
    default: true
  include_raw:
    description:
      - Also return every blob as base64 in RV(ansible_facts.kho.raw), for filing bug reports or
        decoding elsewhere with the P(kexec.kho.fdt_decode#filter) filter.
    type: bool
    default: false
  lock:
    description:
      - First, in the same run, take the host's handover lock as M(kexec.kho.kho_lock) does with
        O(kexec.kho.kho_lock#module:state=acquired), so that the state is read, and the load checked, under it; a
        lock whose run has ended on this controller is taken over the same way.
      - The lock is taken before debugfs is mounted (O(mount_debugfs)); where another run holds it, the task fails
        naming that run, and nothing is mounted or read.
      - Where this task took the lock and mounting debugfs or reading then fails, the lock is released again.
      - The lock is released with M(kexec.kho.kho_lock) O(kexec.kho.kho_lock#module:state=released), or by the jump
        (C(/run) is a tmpfs).
    type: dict
    version_added: 0.3.0
    suboptions:
      path:
        description: As M(kexec.kho.kho_lock)'s O(kexec.kho.kho_lock#module:path).
        type: path
        default: /run/kexec-kho/handover.lock
      break_lock:
        description: As M(kexec.kho.kho_lock)'s O(kexec.kho.kho_lock#module:break_lock).
        type: str
      owner:
        description: Set by the action plugin to this run's identity; a value given in the task is ignored.
        type: dict
  preflight:
    description:
      - In the same run, check what M(kexec.kho.kho_kexec) O(kexec.kho.kho_kexec#module:state=loaded) would do with
        these options, as its check mode does (nothing is loaded, finalized or recorded), and return it as
        RV(preflight). A refusal is reported there, not as a failure of this task.
      - Outside check mode, what was read of the target image is kept under O(preflight.state_dir) (by the image's
        sha256), so that the load on the same boot does not decompress the image again.
      - Without O(preflight.kernel), the image of RV(ansible_facts.kho.images) is used, with its initrd unless
        O(preflight.initrd) is given.
    type: dict
    version_added: 0.3.0
    suboptions:
      kernel:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:kernel); found on the host when omitted.
        type: path
      initrd:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:initrd).
        type: path
      cmdline:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:cmdline).
        type: str
      append:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:append).
        type: str
      ensure_kho:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:ensure_kho).
        type: bool
        default: true
      finalize:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:finalize).
        type: bool
        default: false
      method:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:method); resolved in RV(preflight).
        type: str
        default: auto
        choices: [auto, kexec, systemctl]
      accept_loss:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:accept_loss).
        type: list
        elements: str
        choices: [fd_stores, process_sessions]
        default: []
      drop_regions:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:drop_regions).
        type: list
        elements: str
        default: []
        version_added: 0.3.0
      target_check:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:target_check).
        type: str
        default: refuse
        choices: [refuse, report]
        version_added: 0.3.0
      state_dir:
        description: As M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:state_dir).
        type: path
        default: /run/kexec-kho
  pstore_search:
    description:
      - Strings to look for in this boot's pstore records (the pstore filesystem under C(/sys/fs/pstore), and
        C(/var/lib/systemd/pstore), where C(systemd-pstore) moves them at boot); those found are returned in
        RV(pstore_found). At most 4096 files are read, 4 MiB of each.
    type: list
    elements: str
    version_added: 0.3.0
requirements:
  - On the controller, C(pyfdt) (see the collection's C(requirements.txt)).
notes:
  - The kernel's 6.16 usage page names C(kho/out/active); no kernel has that file. Finalization is
    C(kho/out/finalize).
  - On a cold boot the kernel exposes C(out/fdt) truncated (it is sized before producers add their nodes);
    after a handover it is not created at all. RV(ansible_facts.kho.out.fdt) reports this in its C(status) and the
    sub-blob files are decoded instead.
seealso:
  - module: kexec.kho.kho_finalize
  - module: kexec.kho.kho_kexec
  - module: kexec.kho.kho_lock
  - plugin: kexec.kho.kho_query
    plugin_type: filter
  - plugin: kexec.kho.fdt_decode
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Read the KHO state
  kexec.kho.kho_facts:
  become: true

- name: Mount debugfs if needed, then read
  kexec.kho.kho_facts:
    mount_debugfs: true
  become: true

- name: Show where the 'oops' region came back
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kho | kexec.kho.kho_query(\"in.reserve_mem[?name=='oops'].start | [0]\") }}"

- name: Stop early on hosts without KHO
  ansible.builtin.assert:
    that: ansible_facts.kho.enabled
    fail_msg: "{{ ansible_facts.kho.reason }}"
"""

RETURN = r"""
lock:
  description: With O(lock), as M(kexec.kho.kho_lock)'s return (C(acquired), C(holder), C(previous), C(path), C(msg)).
  returned: with O(lock)
  type: dict
  sample: {acquired: true, changed: true, path: /run/kexec-kho/handover.lock, msg: holding /run/kexec-kho/handover.lock,
           holder: {run: "ctl-1:41877:9184523:5f0c2a9e3b1d7c44", target: web-1}, previous: null}
  version_added: 0.3.0
preflight:
  description:
    - What a load would do, with O(preflight). C(ok) says whether it would go ahead; C(msg) says why not, or what it
      would do. Otherwise the keys of M(kexec.kho.kho_kexec)'s return for O(kexec.kho.kho_kexec#module:state=loaded)
      in check mode (C(kernel), C(initrd), C(cmdline), C(argv), C(method), C(competing_loaders), ...).
    - Where it would not, C(refused_by) is V(kho) where KHO is not usable on this boot (the same as the facts'
      C(reason)), else V(load) (the image, the initrd, C(kexec -s), the target, the method).
  returned: with O(preflight)
  type: dict
  sample: {ok: true, msg: would load, kernel: /boot/vmlinuz-7.3.4, method: kexec}
  version_added: 0.3.0
controller_missing:
  description:
    - What this controller lacks to decode and verify a handover (C(pyfdt), C(jmespath), the collection's filters),
      with how to install it; empty when it is ready. With O(lock), a controller that lacks anything is refused before
      the lock is taken.
  returned: always
  type: list
  elements: str
  sample: []
  version_added: 0.3.0
pstore_found:
  description: The strings of O(pstore_search) found in a pstore record, sorted.
  returned: with O(pstore_search)
  type: list
  elements: str
  version_added: 0.3.0
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: complex
  contains:
    kho:
      description: The KHO state of the running kernel.
      returned: always
      type: complex
      contains:
        supported:
          description: The running kernel has KHO built in (V(null) when that cannot be told without root).
          type: bool
          sample: true
        enabled:
          description: KHO is active on this boot (C(kho=on), or enabled by default and not turned off).
          type: bool
          sample: true
        reason:
          description: Why RV(ansible_facts.kho.supported) and RV(ansible_facts.kho.enabled) are what they are,
            with what to do about it.
          type: str
          sample: /sys/kernel/debug/kho exists
        interface:
          description:
            - V(finalize) when C(kho/out/finalize) exists (6.16 to about 7.0), V(live) when C(kho/out) exists
              without it (about 7.1 on), V(none) without KHO, V(unknown) when KHO is enabled but its debugfs
              files cannot be seen.
          type: str
          sample: live
        debugfs_mounted:
          description: debugfs is mounted at RV(ansible_facts.kho.debugfs_root) (after mounting it, when asked to).
          type: bool
        debugfs_root:
          description: The debugfs root that was read.
          type: str
          sample: /sys/kernel/debug
        release:
          description: The running kernel's release (C(uname -r)).
          type: str
          sample: 7.3.4
        images:
          description:
            - The running release's kernel image and initrd as this host's distribution names them, looked for in
              order (Debian C(/boot/vmlinuz-REL) + C(/boot/initrd.img-REL); EL and Fedora C(/boot/vmlinuz-REL) +
              C(/boot/initramfs-REL.img); BLS C(/usr/lib/modules/REL/vmlinuz)); C(/vmlinuz) and C(/initrd.img) only
              when none of those exists, since they point at the newest kernel installed.
            - C(kernel) and C(initrd) are V(null) where absent; C(layout) says which naming matched.
          type: dict
          sample: {kernel: /boot/vmlinuz-6.12.0-55.el10.x86_64, initrd: /boot/initramfs-6.12.0-55.el10.x86_64.img,
                   layout: el}
        machine:
          description: The host's machine name (C(uname -m)).
          type: str
          sample: x86_64
        byteorder:
          description: The host's byte order, used to read KHO's numbers.
          type: str
          sample: little
        cmdline:
          description: The running kernel's command line (C(/proc/cmdline)).
          type: str
        params:
          description: The KHO-related parameters of the running command line, parsed with the kernel's grammar.
          type: dict
          contains:
            kho:
              description: The value of C(kho=), as written; V(null) when absent.
              type: str
            kho_enabled:
              description: C(kho=) read as a kernel boolean; V(null) when absent.
              type: bool
            scratch:
              description: The scratch size, from C(kho_scratch=) or its later spelling C(kho_bootmem=).
                C(param), C(value), C(kind) (V(percent) or V(sizes)), then C(percent) or C(lowmem), C(global)
                and C(pernode) in bytes.
              type: dict
            reserve_mem:
              description: Each C(reserve_mem=) as C(value), C(size) and C(align) in bytes, and C(label).
              type: list
              elements: dict
            invalid:
              description: Parameters whose value the kernel would reject, with the error.
              type: list
              elements: dict
        kernel_config:
          description: The KHO options from C(/proc/config.gz); V(null) when the kernel does not expose it.
          type: dict
        kexec_loaded:
          description: A kexec image is loaded (C(/sys/kernel/kexec_loaded)); V(null) where that file is absent (a
            kernel without kexec).
          type: bool
        boot_id:
          description: This boot's id; it changes on every boot, kexec included.
          type: str
        liveupdate:
          description:
            - Live update (the Live Update Orchestrator, LUO), read without opening C(/dev/liveupdate) (it admits one
              opener at a time).
          type: dict
          version_added: 0.3.0
          contains:
            device:
              description: C(/dev/liveupdate) exists (LUO is built in and enabled).
              type: bool
            registered:
              description: This kernel registered the C(liveupdate) device (C(/proc/misc) lists it), which it does only
                with LUO on (C(liveupdate=on) and KHO); V(null) where C(/proc/misc) cannot be read. After a jump, the
                new kernel's own word that something can open C(/dev/liveupdate) and get sessions back.
              type: bool
              version_added: 0.4.0
            param:
              description: The last C(liveupdate=) value on the command line; V(null) where there is none.
              type: str
            sessions:
              description: LUO session fds held now, from C(/proc/PID/fd) (C(anon_inode:[luo_session] NAME)); at
                most 256.
              type: list
              elements: dict
              sample: [{"name": "test-session", "pid": 812, "comm": "luo_kexec_simp", "unit": "session-3.scope"}]
            device_holders:
              description: The processes holding C(/dev/liveupdate) open (pid, comm, unit).
              type: list
              elements: dict
            truncated:
              description: The C(/proc) scan stopped at its bounds (65536 processes, 4096 fds each, 256 entries).
              type: bool
            incoming_number:
              description: >-
                The liveupdate number this boot received, from the kernel's line
                "luo: Retrieved live update data, liveupdate number: N"; V(null) where there is none (a cold boot,
                or O(kernel_log=false)).
              type: int
            outgoing:
              description:
                - The outgoing C(out/sub_fdts/LUO) entry (C(struct luo_ser)), decoded on the controller where its
                  content starts with C(luo-v); V(null) where there is none. The incoming entry is not decoded (LUO
                  frees it early in boot); see RV(ansible_facts.kho.liveupdate.incoming_number).
                - C(compatible), C(next_number) (the number the next kernel will log), C(sessions) and C(flbs) (whether
                  the entry points at any; both are filled in during the reboot syscall).
              type: dict
            systemd:
              description:
                - systemd's C(version), PID 1's C(kexec_count) (C(KExecCount), systemd 261 and later; V(null)
                  before), and C(preserving_units), the services with C(FileDescriptorStorePreserve=yes) or
                  C(LUOSession=) (C(unit), C(active), C(preserve), C(luo_session), C(fd_store) = C(NFileDescriptorStore)).
                - C(boot_phases), the phases C(systemd-analyze time) prints, in seconds; after a kexec, systemd 262
                  also counts the old boot's C(stopping), C(exit) and C(systemd-shutdown). V(null) until the boot has
                  finished.
                - V(null) where C(systemctl) does not run.
              type: dict
        lockdown:
          description: The kernel lockdown mode (V(none), V(integrity), V(confidentiality)); V(null) without LSM lockdown.
          type: str
        log:
          description:
            - KHO-related kernel log lines (V(null) when O(kernel_log=false) or C(/dev/kmsg) is unreadable), the
              C(reserve_mem) revivals and C(ramoops) attachments among them; at most 4096.
            - Only the kernel's own records (facility 0); a line a process wrote to C(/dev/kmsg) is left out.
          type: list
          elements: str
          sample: ["[    0.632694] KHO: exec from: 7.3.4 (count 1)", "[    0.000000] Revived memory reservation 'oops' from KHO"]
        over_budget:
          description: Why the controller refused to decode this host's blobs (over its decode budget per host).
          returned: when over the budget
          type: str
          version_added: 0.3.0
        reserve_mem_param:
          description:
            - The names of the C(reserve_mem) regions this kernel reserved, from debugfs C(memblock/reserve_mem_param)
              (7.x); V(null) where the file is absent (no region reserved, or an older kernel).
          type: list
          elements: str
          sample: [oops]
          version_added: 0.3.0
        self_return:
          description:
            - What of the host's own return (M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:confirm_timeout))
              is on disk - C(present), the paths; and C(note), the note of a return the host made by itself (its
              C(run_id), C(old_boot_id), C(new_boot_id), C(old_release), C(new_release), C(timeout), C(state)), or
              V(null). The handover role reports a note it finds and removes it (O(kexec.kho.kho_kexec#module:state=disarmed)).
          type: dict
          sample: {present: [], note: null}
          version_added: 0.4.0
        stage:
          description:
            - A staged load (M(kexec.kho.kho_kexec)'s O(kexec.kho.kho_kexec#module:stage_ttl)) - C(staged), the run
              it is staged for and its C(expires_at), or V(null); and C(expired), the host's note that it ended a
              staged load whose time ran out (C(run), C(at), C(state) - V(unloaded) or V(unload-failed) - and
              C(kernel)), or V(null). The handover role says a note it finds.
          type: dict
          sample: {staged: null, expired: {run: "ctl:4242:98765:1f2e", at: 1796000000, state: unloaded, kernel: /boot/vmlinuz-7.3.4}}
          version_added: 0.4.0
        out:
          description: What this kernel will hand over.
          type: dict
          contains:
            present:
              description: C(kho/out) exists.
              type: bool
            finalized:
              description: The finalize state on V(finalize) kernels; V(null) where there is none.
              type: bool
            scratch:
              description: Scratch regions, each C(phys) and C(len) in bytes.
              type: list
              elements: dict
            fdt:
              description: The outgoing root tree C(out/fdt) with C(status) (V(complete), V(truncated),
                V(absent), V(invalid)), C(size), C(sha256) and C(error); when complete, its decoded root
                (see RV(ansible_facts.kho.in)).
              type: dict
            sub_blobs:
              description: Registered sub-blobs by name, decoded as in RV(ansible_facts.kho.in.sub_blobs).
              type: dict
            reserve_mem:
              description: The C(reserve_mem) regions in the outgoing C(memblock) blob, each C(name), C(start), C(size).
              type: list
              elements: dict
            kexec_metadata:
              description: The outgoing C(kexec-metadata), decoded.
              type: dict
        in:
          description: What the previous kernel handed over to this one.
          type: dict
          contains:
            present:
              description: This boot received handover data (C(kho/in) exists).
              type: bool
            fdt:
              description: C(status), C(size) and C(sha256) of C(in/fdt) (C(error) when it does not decode).
              type: dict
            compatible:
              description: The root tree's C(compatible) (V(kho-v1) to V(kho-v4) are known; others are reported).
              type: str
              sample: kho-v4
            version:
              description: The number in a known root C(compatible); V(null) for an unknown one.
              type: int
            known_version:
              description: The root C(compatible) is one this collection knows.
              type: bool
            preserved_memory_map:
              description: Physical address of the preserved-memory map.
              type: int
            sub_blobs:
              description:
                - Each sub-blob by name with C(phys) (its physical address, from C(preserved-data) or the
                  V(kho-v1) C(fdt) property), C(blob_size) (from C(blob-size), V(kho-v3) on), and from its
                  file C(size), C(sha256), C(format) (V(fdt), V(kexec-metadata) or V(binary)).
                - FDT blobs add C(compatible) and C(tree) (nested C(properties) and C(nodes)); C(memblock)
                  adds C(reserve_mem); C(kexec-metadata) adds C(metadata). A blob that fails to decode has C(error).
              type: dict
            reserve_mem:
              description: The C(reserve_mem) regions handed over, each C(name), C(start), C(size) (bytes).
              type: list
              elements: dict
              sample: [{"name": "oops", "start": 1051721728, "size": 1048576}]
            kexec_metadata:
              description: C(version), C(previous_release) and C(kexec_count) of the incoming C(kexec-metadata).
              type: dict
              sample: {"version": 1, "previous_release": "7.3.4", "kexec_count": 1}
        errors:
          description: One entry per blob that could not be decoded, with C(blob) (its debugfs path) and C(error).
          type: list
          elements: dict
        raw:
          description: Every blob read, base64, by debugfs path (only with O(include_raw=true)).
          type: dict
          returned: when O(include_raw=true)
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kexec.kho.plugins.module_utils._kho import facts, host, kexec, lock, paths, self_return, stage


ARGUMENT_SPEC = {
    **host.ARGUMENT_SPEC,
    "kernel_log": {"type": "bool", "default": True},
    "include_raw": {"type": "bool", "default": False},
    "lock": {"type": "dict", "options": lock.ARGUMENT_SPEC},
    "preflight": {"type": "dict", "options": {k: kexec.ARGUMENT_SPEC[k] for k in kexec.PREFLIGHT_OPTIONS}},
    "pstore_search": facts.PSTORE_SEARCH_SPEC,
}


def take_lock(module) -> tuple:
    """The handover lock, before anything is read (the state is read under it): (its answer, the lock this task
    took, to give back if the read fails, or None)."""
    options = module.params["lock"]
    try:
        held = lock.take(options, module.check_mode)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except PermissionError as exc:
        module.fail_json(msg=f"cannot lock {options['path']}: {exc}; this needs root: use become: true")
    return held, (held if held["changed"] and not module.check_mode else None)


def read(module, kho) -> dict:
    """The host's KHO state and, in the same run, what a load would do (nothing changed) and what pstore holds."""
    p = module.params
    out = facts.read(kho, p["kernel_log"], p["pstore_search"], module.run_command)
    where = self_return.where_for(kho)  # the host's own return of a run (kho_kexec confirm_timeout), as on disk
    out["kho_raw"]["self_return"] = {"note": self_return.read_note(where), "present": self_return.present(where)}
    out["kho_raw"]["stage"] = stage.read(paths.STATE_DIR)  # a load staged for a run, and one whose time ran out
    if p["preflight"] is not None:
        raw = out["kho_raw"]
        out["preflight"] = kexec.preflight(module, kho, p["preflight"], raw["images"], raw["liveupdate"])
    return out


def mount(module, kho, taken) -> bool:
    """debugfs, mounted where allowed once the lock is held (a run the lock refuses changes nothing); a mount that
    fails gives back the lock this task took (run_command's check_rc has already answered with the failure)."""
    try:
        return host.ensure_debugfs(module, kho)
    except SystemExit:
        give_back(taken)
        raise


def give_back(taken) -> None:
    """The lock this task took (``taken``; None where it took none), released after a failure."""
    if taken:
        lock.release(taken["path"], taken["holder"])


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    kho = host.from_params(module.params)
    extra, taken = {}, None
    if module.params["lock"] is not None:  # before any mount: a refused run changes nothing
        extra["lock"], taken = take_lock(module)
        if not extra["lock"]["acquired"]:  # nothing read: the action plugin takes an ended run's lock over, or fails
            module.exit_json(changed=False, **extra)
    changed = mount(module, kho, taken) or bool(extra.get("lock", {}).get("changed"))
    try:
        extra.update(read(module, kho))
    except (host.NeedsRoot, OSError) as exc:
        give_back(taken)  # this task took the lock: a read that failed gives it back
        if isinstance(exc, host.NeedsRoot):
            module.fail_json(msg=str(exc), path=exc.path)
        module.fail_json(msg=f"reading KHO state failed: {exc}")
    module.exit_json(changed=changed, **extra)


if __name__ == "__main__":
    main()
