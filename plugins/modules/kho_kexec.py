#!/usr/bin/python
# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kho_kexec
short_description: Load or unload a kexec image that carries the Kexec HandOver data
version_added: 0.1.0
description:
  - O(state=loaded) loads a kernel with C(kexec -s -l), the in-kernel file loader; the user-space loader
    cannot carry KHO data and is never used.
  - The next kernel's command line is O(cmdline) exactly, or the running one with O(append) added; C(kho=on)
    is ensured on it unless O(ensure_kho=false).
  - Idempotent. What was loaded (kernel and initrd sha256, the exact command line, the boot id) is recorded
    under O(state_dir); O(state=loaded) loads only when C(/sys/kernel/kexec_loaded) is C(0) or the record differs
    from what is asked. The record is this collection's word, not the kernel's (another loader may have replaced the
    image since), so O(state=executed) always loads again, and the target is checked again, right before the jump.
  - An image loaded outside this run (C(kexec_loaded) is C(1) and the record does not name what is asked; loaded by
    hand with C(kexec -s -l), by another tool, or by this collection with other values) is named and left as it is,
    before anything changes, unless O(replace_loaded=true). A rollback never unloads an image this run did not load.
  - On finalize-era kernels that are not finalized, the load is refused unless O(finalize=true), since the
    6.16 to 6.18 kernels only take the handover data at load time when finalized. A load that fails after
    this task finalized aborts the finalize again, where the kernel can.
  - O(state=unloaded) runs C(kexec -u) when an image is loaded.
  - O(state=confirmed), on the new boot, confirms it - the rename of the self-return's marker, which the host's own
    return races for - and removes everything armed; RV(confirmed) says whether the confirm won.
    O(state=disarmed) removes whatever of the self-return is on disk, and the note of a return the host made by
    itself, returned as RV(note).
  - O(state=executed) (an action plugin, modelled on M(ansible.builtin.reboot)) runs the module once on the host,
    which checks the boot id (the one O(expect_boot_id) gives, and never the controller's own), ensures the image
    is loaded, writes O(pmsg) where given, checks that an image is loaded and queues the jump detached from the SSH
    session, and returns the boot id it ran on. The queued jump waits for that run to exit, so its answer reaches
    the controller before the kernel goes away. The action then polls with a fresh connection each time until the
    host answers with a well-formed boot id different from the old one and, where given, O(test_command)
    succeeds. With O(verify_handover) it then fails unless the new kernel received handover data.
  - The run on the host says who it is before it changes anything, in the jump status file C(/run/kexec-kho.jump),
    with the action's run id, its process id and start time, what it changed and has not undone (the finalize, the load),
    and how far it got (C(running), C(started) once the jump is queued, C(failed)); it rewrites the file after each
    change, and the queued jump writes its own failures there. Every poll reads that status and whether that process
    is still alive.
  - Where the load's answer is lost (the connection broke; with pipelining the run on the host goes on), the polls
    decide from the host, never from the missing answer. The host did not jump only where the old boot says so (the
    jump command returned, or this run failed or its process ended before it queued the jump, or the host still
    answers on its old boot O(not_jumped_after) seconds after the trigger, never seen gone, while this run is not
    running there any more). The rollback then undoes what the status says this run left (RV(load) carries it as
    C(loaded_here) and C(finalized_here)). While this run still runs there, the wait goes on. Where the old boot id is
    not known either, the old boot is the one with this run's status; a host that first answers on a boot without
    it may have jumped or not, and the task fails with RV(jumped=null), changing nothing more.
  - One run on the host before the jump; whatever fails in it is undone, only as far as it changed something (an
    image it loaded unloaded, a finalize it made aborted), and answered with C(triggered=false) in RV(load), never taken
    for a lost answer. With O(facts_after), no run after it.
author:
  - kexec.kho contributors (@kexec-kho)
extends_documentation_fragment:
  - kexec.kho._host
  - kexec.kho._host.attributes
  - ansible.builtin.action_common_attributes
options:
  state:
    description: Whether an image should be loaded.
    type: str
    required: true
    choices: [loaded, unloaded, executed, confirmed, disarmed]
  kernel:
    description: Path of the kernel image on the host (x86 bzImage, arm64 Image or EFI zboot). Required for O(state=loaded)
      and O(state=executed).
    type: path
  initrd:
    description:
      - Path of the initrd on the host, or V(none) to load the kernel without one, whatever it has.
      - Without it, the initrd that belongs to the target is found beside the image for the image's own release
        (C(initrd.img-REL) and C(initramfs-REL.img) beside it, C(/boot/initrd.img-REL),
        C(/boot/initramfs-REL.img), kernel-install's C(/usr/lib/modules/REL/initrd), the BLS entries whose
        C(linux) line is the image).
      - A target with modules (C(/usr/lib/modules/REL/modules.dep)) that does not build in this root's file system
        and disk drivers (its C(modules.builtin)) cannot mount the root without its initramfs; where none is found,
        the load is refused, naming every path looked for, before anything changes. A target without a module tree
        needs none.
    type: path
  cmdline:
    description: The next kernel's command line, exactly (but see O(ensure_kho)). Mutually exclusive with O(append).
    type: str
  append:
    description: Parameters added to the running kernel's command line (C(BOOT_IMAGE=) is dropped, as
      C(kexec --reuse-cmdline) does). Without O(cmdline) and O(append), the running command line is reused.
    type: str
  ensure_kho:
    description: Add C(kho=on) to the next kernel's command line unless it already enables KHO.
    type: bool
    default: true
  finalize:
    description: On finalize-era kernels that are not finalized, finalize before loading instead of failing.
    type: bool
    default: false
  force:
    description: Load again even when the record says the same image is loaded (O(state=executed) always does).
    type: bool
    default: false
  replace_loaded:
    description:
      - Replace an image loaded outside this run (see RV(loaded_before)). Without it such an image is named and left
        loaded, and nothing changes.
      - A rollback of a run that replaced one unloads this run's image; the one it replaced is gone.
    type: bool
    default: false
    version_added: 0.4.0
  state_dir:
    description:
      - Where the record of the load is kept; a tmpfs, so that it does not outlive the boot.
      - It also keeps what was read of the last target image (C(image.json), by its sha256), so that the load
        after a preflight on the same boot does not decompress the image again; never written in check mode.
    type: path
    default: /run/kexec-kho
  method:
    description:
      - How O(state=executed) jumps. V(kexec) runs C(kexec -e) (no shutdown; fastest). V(systemctl) runs
        C(systemctl kexec), which stops services cleanly first and then jumps to the loaded image.
      - What each keeps of live update (LUO, C(/dev/liveupdate)) differs. C(kexec -e) keeps the sessions that
        processes hold, but systemd never serialises its fd stores. C(systemctl kexec) keeps the fd stores of
        services with C(FileDescriptorStorePreserve=yes) (systemd 261 and later), but stops, first, the processes
        that hold sessions, and their sessions are lost.
      - V(auto) picks V(systemctl) where systemd preserves fd stores on the host and V(kexec) otherwise (always
        V(kexec) without C(/dev/liveupdate)); where each method would lose something, the load is refused before
        any change, naming the sessions, their processes and the units. An explicit method that would lose live
        update state is refused the same way, unless O(accept_loss) names that loss.
      - What the method carries through LUO comes back only from a new kernel with C(/dev/liveupdate) - a target
        command line without C(liveupdate=on) (or with C(kho=off)) is refused the same way, naming what it would
        lose, unless O(accept_loss) names that loss.
      - Resolved by the load (O(state=loaded) and O(state=executed)), returned as RV(method).
      - V(auto) and the default V(auto) are new in 0.3.0; the default was V(kexec) before.
    type: str
    default: auto
    choices: [auto, kexec, systemctl]
  accept_loss:
    description:
      - Live update state the jump may lose, where no method keeps everything. V(fd_stores) lets V(kexec) drop
        systemd's preserved fd stores; V(process_sessions) lets V(systemctl) drop the LUO sessions processes hold.
    type: list
    elements: str
    choices: [fd_stores, process_sessions]
    default: []
    version_added: 0.3.0
  drop_regions:
    description:
      - Names of C(reserve_mem) regions the new kernel may leave behind.
      - The new kernel takes a region up only when its own command line has C(reserve_mem=) with the same name and
        size, and an alignment the region's start meets. A load whose target command line would drop a region the
        running kernel hands over is refused, before anything changes, unless the region is named here.
      - The start is read from the running kernel's outgoing C(memblock) tree; where it cannot be read, only an
        alignment no larger than the running kernel's is taken as met.
    type: list
    elements: str
    default: []
    version_added: 0.3.0
  target_check:
    description:
      - Before the load, the target kernel's image is read (its bzImage header and its payload, decompressed with
        the host's Python - gzip, xz, zstd where available - or, where the host cannot decompress the payload, its
        C(/boot/config-REL) config) for the KHO formats it accepts (C(kho-vN), C(memblock-vN), C(reserve-mem-vN),
        C(luo-vN), C(memfd-vN)), and compared with what the running kernel hands over (its outgoing blobs'
        compatibles, and the memfd handler of the LUO sessions processes hold). The result is RV(target).
      - The read is bounded (64 MiB of image, 128 MiB decompressed, 30 s) and must reach the end of the compressed
        stream; a payload that is truncated or damaged, larger, slower or unlike a kernel makes the target V(unknown),
        and no config stands in for it.
      - V(refuse) refuses the load, before anything changes, where the target lacks a format that is handed over
        (a target that does not accept the root's version skips the whole handover; one without the memfd handler
        cannot restore the sessions), or where what it reads is unknown and LUO sessions are held.
      - V(report) loads anyway and only reports it.
    type: str
    default: refuse
    choices: [refuse, report]
    version_added: 0.3.0
  connect_timeout:
    description:
      - Seconds each connection attempt may take while waiting for the host to come back.
      - Every remote command of O(state=executed) (the boot id read, each poll, O(test_command)) is
        abandoned, and the connection reset, when it has not answered within this plus 10 seconds, whatever the
        connection plugin; a half-open session cannot hold the task past O(kexec_timeout) by more than one attempt.
    type: int
    default: 5
  kexec_timeout:
    description:
      - Seconds to wait for the host to answer on its new boot before failing. O(test_command) runs within what is
        left of it (at least one attempt's time).
    type: int
    default: 300
  post_kexec_delay:
    description: Seconds to wait after starting the jump before polling.
    type: float
    default: 0
  poll_interval:
    description:
      - Seconds between polls at first. Once the old kernel is gone the pause grows by half each round, up to 2
        seconds (or this, if longer), since a connection attempt made while the host is down is not always lost (a NAT,
        or QEMU's user network, retries it), and a burst of them reaching sshd as it starts trips its
        C(MaxStartups) and drops the login that was waited for.
      - Where the connection is SSH and the address it dials answers with an SSH banner right before the jump,
        each poll first reads that banner (a cheap TCP check), so a host that is back is seen within one pause.
        Where it does not (an C(ssh_config) alias, a C(ProxyJump) or C(ProxyCommand) bastion, a port set only in
        C(ssh_config)), every poll is a real attempt through the connection plugin; see RV(detection).
    type: float
    default: 0.25
  test_command:
    description:
      - A command that must succeed on the new boot before the task returns, run after the new boot id was
        read.
      - By default there is none, and reading the boot id (with O(verify_handover), together with the check for
        C(kho/in) in the same command) is the first and only round trip to the new kernel.
    type: str
  verify_handover:
    description: After the jump, fail unless the new kernel received handover data (C(kho/in) exists).
    type: bool
    default: true
  not_jumped_after:
    description:
      - Seconds after the trigger after which a host that still answers on its old boot id, and was never seen
        gone, did not jump (a C(systemd-run) timer that never fired, a jump that hangs); the image is unloaded and the
        task fails with RV(jumped=false). Raise it where C(systemctl kexec) takes longer to stop the host's
        services.
      - Not while this run's process still runs on the host without having queued the jump (the load's answer
        lost, the run going on), since it may still queue it, and the wait goes on until O(kexec_timeout), then ends with
        RV(jumped=null).
      - Sooner than that, the old boot says so itself in this run's jump status, C(/run/kexec-kho.jump), for a jump
        command that returned (a C(kexec -e) that failed, a refused C(systemctl kexec)), or this run failed or ended
        before it queued the jump. A poll that reaches the old boot and finds that, ends the wait at once, with the
        same rollback. No status of this run at all is decided by O(not_jumped_after) (the run may not have started
        yet), or at once where the module answered (it ended without ever writing one, so it changed nothing).
    type: int
    version_added: 0.2.0
    default: 60
  pmsg:
    description:
      - O(state=executed) only. Text written to pstore's message log (C(/dev/pmsg0), ramoops with
        C(ramoops.pmsg_size)) in the same run, after the load and right before the jump is queued. A canary that
        a verification looks for after the jump (the P(kexec.kho.handover#role) role's C(kho_handover_canary)).
      - Where it cannot be written, nothing is jumped and the load is undone.
      - Where the running command line puts ramoops on a C(reserve_mem) region (C(ramoops.mem_name=)), a target
        command line that would not attach ramoops to that region again with the same zones (C(ramoops.mem_name=),
        the region kept, C(record_size), C(console_size), C(ftrace_size), C(pmsg_size), C(ecc)) is refused before
        the load, since the text could not be found after the jump.
    type: str
    version_added: 0.3.0
  expect_boot_id:
    description:
      - The host's boot id as read earlier (RV(kexec.kho.kho_facts#module:ansible_facts.kho.boot_id)). The module
        changes nothing unless the host is still on that boot; with O(state=executed) the action also skips its own
        boot id read, one round trip fewer.
    type: str
    version_added: 0.3.0
  stage_ttl:
    description:
      - With O(state=loaded), seconds the load stays I(staged) for this run (0, the default - not staged; at most
        86400). A staged load is this run's own (refused where any image is loaded already, and on a kernel with a
        finalize state, whose handover would be the state of the stage); the host itself unloads it, releases the
        handover lock where this run still holds it, and writes a note that a later
        M(kexec.kho.kho_facts) reports (RV(kexec.kho.kho_facts#module:ansible_facts.kho.stage)), once the time has
        passed and no O(state=executed) with O(staged) of the same run took it up (a systemd timer, else a sleeping
        process in its own session).
      - While an image is loaded, a plain C(systemctl reboot) on the host becomes a kexec into it (systemd's
        auto-kexec; C(SYSTEMCTL_SKIP_AUTO_KEXEC=1) opts a caller out) - an unplanned handover, never verified by
        this run. The time to live bounds how long that can happen.
    type: int
    default: 0
    version_added: 0.4.0
  staged:
    description:
      - With O(state=unloaded), unload only a load still staged for this run (O(stage_ttl)); anything else loaded is
        left as it is.
      - With O(state=executed), take up the load this run staged (O(stage_ttl)) instead of loading again (in one shell
        command where it can, see RV(load)), where the
        run still holds the handover lock (else the task fails, nothing changed), the load is still staged for it and
        C(/sys/kernel/kexec_loaded) is C(1); the record must name what the task asks. The staged load then counts as
        this task's, and any failure before the jump unloads it. Where it is no longer staged (it expired, or was
        unloaded), the task loads again, as without O(staged) (RV(reused_staged) V(false)).
    type: bool
    default: false
    version_added: 0.4.0
  owner:
    description:
      - Set by the action plugin for O(state=loaded), O(state=unloaded) and O(state=executed) to this run, as the handover lock names
        it (M(kexec.kho.kho_lock)), with C(request), a digest of what the task asks to load (a stage's switch
        script runs only for a switch that asks the same); a value given in the task is ignored.
    type: dict
    version_added: 0.4.0
  lock_path:
    description:
      - The handover lock's file (M(kexec.kho.kho_lock)'s O(kexec.kho.kho_lock#module:path)) that a staged load is
        bound to (O(stage_ttl), O(staged)) - its expiry releases it where this run still holds it, and a switch takes
        the load up only while this run holds it.
    type: path
    default: /run/kexec-kho/handover.lock
    version_added: 0.4.0
  run_id:
    description:
      - Set by the action plugin for O(state=executed) to this task's own id (the one the jump status carries); a
        value given in the task is ignored.
    type: str
    version_added: 0.4.0
  facts_after:
    description:
      - O(state=executed) only. Once the new boot answered and O(test_command) (where given) passed, one command
        reads its KHO state as M(kexec.kho.kho_facts) does (the same code, run by the interpreter that ran the
        load, without C(ansible.module_utils.basic)), and the controller decodes it into RV(ansible_facts), so
        that no module run is needed after the jump. RV(facts_read) says whether it was read (not where the load's
        answer was lost, or the read failed or could not be decoded; a warning then says why).
    type: bool
    default: false
    version_added: 0.4.0
  pstore_search:
    description:
      - With O(facts_after), strings to look for in the new boot's pstore records, as
        M(kexec.kho.kho_facts)'s O(kexec.kho.kho_facts#module:pstore_search); those found are in RV(pstore_found).
    type: list
    elements: str
    version_added: 0.4.0
  confirm_timeout:
    description:
      - With O(state=executed), seconds of the new kernel's uptime within which the controller must confirm it
        (O(state=confirmed)); V(0) arms nothing.
      - Before the jump is queued, the host's own return ("commit confirmed", docs/way-back.md) is armed on disk - the
        script C(/var/lib/kexec-kho/return/return.sh), its marker, the unit C(/etc/systemd/system/kexec-kho-return.service)
        and its link in C(sysinit.target.wants). It acts on one boot only - this run's kexec (another boot id, a KHO
        handover received, whose C(kexec-metadata) names the old release with the count the old kernel sent, on the
        release the jump loaded); on any other boot (a cold one) it removes itself and does nothing. Unless confirmed
        in time, it loads the old kernel (RV(way_back)) and jumps back by itself, leaving a one-line note in
        C(/var/lib/kexec-kho/returned).
      - Refused before the jump (and the load undone) where no way back was recorded, systemd is not PID 1, the
        kernel hands over at finalize (6.16 to 6.18), or a value would not be one plain word in the script.
      - The wait for the new boot grows by this many seconds, and where the host returned by itself, RV(self_return)
        carries its note. A rollback on the old boot disarms it.
    type: int
    default: 0
    version_added: 0.4.0
  return:
    description:
      - With O(state=executed), whether a new kernel that fails its checks is handed back to the old one by a second
        KHO handover (docs/way-back.md), for playbooks without the handover role (whose C(kho_handover_return) also
        covers its own checks).
      - V(on_failure) - where the new boot answered and failed O(test_command) or O(verify_handover)
        (RV(failed_check)), and RV(way_back) is possible, the old kernel's facts read before the jump are the
        baseline; on the new boot the handover lock is taken, anything O(confirm_timeout) armed is disarmed, the way
        back's kernel is loaded with the same O(finalize), O(accept_loss), O(drop_regions) and method, O(target_check=refuse)
        (the old kernel must read what the new one sends), and the host jumps back. With O(pmsg), the return writes
        C(PMSG-back) and looks for it in the old kernel's pstore. The old kernel's own facts then decide (RV(return)).
        The run fails all the same - a returned host is never a verified handover.
      - V(never) - the host stays on the new kernel (RV(failed_check) says what it failed).
      - Where the old kernel's facts cannot be read before the jump, nothing is loaded and the run fails.
    type: str
    choices: [on_failure, never]
    default: never
    version_added: 0.4.0
requirements:
  - kexec-tools 2.0.14 or later on the managed host (C(kexec -s), for C(kexec_file_load)); an older one is refused
    before anything changes.
notes:
  - O(state=executed) is refused on a C(local) connection, and wherever the host's boot id is the controller's own
    (whatever the connection plugin), since the jump would replace the kernel the run executes on.
  - Under kernel lockdown or C(KEXEC_SIG_FORCE) only a signed image loads; the error says so.
  - RV(competing_loaders) lists what on the host loads its own image without C(-s) when none is loaded
    (C(systemctl kexec), Debian's C(kexec-load) with C(LOAD_KEXEC=true)). Check right before a jump that the
    loaded image is still this one.
seealso:
  - module: kexec.kho.kho_finalize
  - module: kexec.kho.kho_facts
"""

EXAMPLES = r"""
- name: Load the installed kernel, reusing the running command line with kho=on
  kexec.kho.kho_kexec:
    state: loaded
    kernel: /boot/vmlinuz-7.3.4
    initrd: /boot/initrd.img-7.3.4
  become: true

- name: Load with an exact command line, finalizing first where the kernel needs it
  kexec.kho.kho_kexec:
    state: loaded
    kernel: /boot/vmlinuz
    cmdline: root=/dev/vda rw console=ttyS0 kho=on reserve_mem=1M:4096:oops ramoops.mem_name=oops
    finalize: true
  become: true

- name: Back out
  kexec.kho.kho_kexec:
    state: unloaded
  become: true

- name: Load and jump, then wait for the new kernel and check it received the handover
  kexec.kho.kho_kexec:
    state: executed
    kernel: /boot/vmlinuz
    kexec_timeout: 180
  become: true
  register: jump

- name: An upgrade that goes home by itself where the new kernel fails its health check
  kexec.kho.kho_kexec:
    state: executed
    kernel: /boot/vmlinuz-7.3.4
    pmsg: "upgrade {{ ansible_date_time.epoch }}"
    test_command: systemctl is-active --quiet my-service
    facts_after: true
    return: on_failure
  become: true
  register: jump
  ignore_errors: true  # a returned host is still a failed run; the next task decides from its fields

- name: Say where the host is
  ansible.builtin.debug:
    msg: "{{ jump.return.verdict if jump.return is defined else jump.failed_check | default('jumped') }}"
"""

RETURN = r"""
loaded:
  description: An image is loaded after the task (in check mode, would be).
  returned: success
  type: bool
kernel:
  description: The kernel image loaded.
  returned: O(state=loaded)
  type: str
kernel_sha256:
  description: SHA-256 of the kernel image.
  returned: O(state=loaded)
  type: str
initrd:
  description: The initrd loaded, if any.
  returned: O(state=loaded)
  type: str
initrd_sha256:
  description: SHA-256 of the initrd, if any.
  returned: O(state=loaded)
  type: str
initrd_how:
  description: How the initrd was decided (V(given), found beside the target, none needed and why, or none as asked).
  returned: O(state=loaded)
  type: str
  sample: found beside the target
cmdline:
  description: The next kernel's command line, exactly as passed to kexec.
  returned: O(state=loaded)
  type: str
  sample: root=/dev/vda rw console=ttyS0 kho=on
boot_id:
  description: The boot id of the kernel that did the load.
  returned: O(state=loaded)
  type: str
image_kind:
  description: The kernel image format found (V(bzImage), V(Image), V(zboot)).
  returned: O(state=loaded)
  type: str
interface:
  description: The KHO interface generation, V(finalize) or V(live).
  returned: O(state=loaded)
  type: str
finalized_here:
  description: This task finalized the kernel before loading (O(finalize=true)); in a failed task's answer, whether
    that finalize is left in place (its undo failed).
  returned: O(state=loaded)
  type: bool
lockdown:
  description: The kernel lockdown mode, if the kernel has lockdown.
  returned: O(state=loaded)
  type: str
competing_loaders:
  description: What on the host would load an image without C(-s) when none is loaded.
  returned: O(state=loaded)
  type: list
  elements: str
previous:
  description: The record of the previous load by this collection on this boot, if any.
  returned: success
  type: dict
loaded_before:
  description:
    - What was loaded before this task's load. V(nothing); V(recorded), the image asked for, as this collection's
      record on this boot names it; V(other), an image loaded outside this run (refused unless O(replace_loaded)).
  returned: O(state=loaded); for O(state=executed) in RV(load)
  type: str
  version_added: 0.4.0
staged:
  description: With O(stage_ttl), the staged load - C(run), C(ttl), C(expires_at) (seconds since the epoch), C(argv)
    (what started its expiry) and C(switch), the path of the switch's script (written where the action told the
    stage what its task asks, as M(kexec.kho.kho_kexec)'s action always does); V(null) in check mode.
  returned: O(state=loaded) with O(stage_ttl)
  type: dict
  version_added: 0.4.0
reused_staged:
  description: With O(state=executed), the load this run staged was taken up, not loaded again (O(staged)).
  returned: O(state=executed), in RV(load)
  type: bool
  version_added: 0.4.0
reloaded:
  description: The image the record names was loaded again (O(state=executed), O(force)); RV(loaded_here) is then
    V(false), since what is loaded is what was there.
  returned: O(state=loaded); for O(state=executed) in RV(load)
  type: bool
  version_added: 0.4.0
argv:
  description: The kexec command line the task runs (or would run), as an argument list.
  returned: success
  type: list
  elements: str
msg:
  description: What was done.
  returned: always
  type: str
load:
  description:
    - The result of the run on the host that loaded the image and queued the jump (with C(triggered), whether the
      jump was queued, V(null) where its answer was lost; and C(trigger), the command that queued it).
    - Where the host did not jump and the answer was lost, C(loaded_here) and C(finalized_here) are what this run's
      jump status on the host says it left (both V(false) where it never wrote one).
    - With O(staged), where the task asks what its stage loaded, on the boot the stage read, with no O(pmsg) and no
      O(confirm_timeout), the switch is one shell command (the script the stage wrote; no module run, C(switched_by)
      V(shell)). Its result is the stage's, read on the old boot while the host still served (RV(way_back) too),
      with C(reused_staged), C(triggered) and C(msg) as the switch found them. Where anything differs (the lock, the
      stage, the boot, what is loaded), the script changes nothing and the module runs instead.
  returned: O(state=executed)
  type: dict
way_back:
  description:
    - The way back to the kernel that ran before the jump, recorded on the old boot before the jump is queued (also in
      check mode). C(possible); C(kernel) and C(initrd), the running release's image and initrd on disk, found as for
      any target; C(cmdline), the running command line less C(BOOT_IMAGE=); C(release); and C(why), a sentence.
    - C(possible) is V(false) where no return can be promised (no image of the running release on disk, only
      C(/vmlinuz), which names the newest kernel installed; a modular build without its initrd), and C(why) says so.
    - The way back takes the host home by it where the new kernel fails a check - O(return=on_failure), or the handover
      role's C(kho_handover_return) (docs/way-back.md).
  returned: O(state=executed), where the run that loads answered
  type: dict
  sample: {possible: true, kernel: /boot/vmlinuz-7.3.4, initrd: /boot/initrd.img-7.3.4,
           cmdline: root=/dev/vda rw console=ttyS0 kho=on, release: 7.3.4,
           why: "the running kernel 7.3.4 is on disk: /boot/vmlinuz-7.3.4 with /boot/initrd.img-7.3.4"}
  version_added: 0.4.0
phases:
  description:
    - Where the time went, in seconds. C(boot_id) is V(null) (the boot id is read in the load's run since 0.4.0);
      C(load) the run that loaded and queued the jump (and read the boot id); C(to_gone) from that run's answer until the old kernel stopped answering;
      C(gone_to_banner) until an SSH banner answered again; C(banner_to_answer) until the new boot id was read;
      C(test_command) the test; C(facts) the read of O(facts_after). The last three are V(null) with RV(detection=connection) (no banner is watched), and
      C(to_answer) then covers the whole wait.
  returned: O(state=executed), after the trigger
  type: dict
  sample: {boot_id: 0.4, load: 6.1, to_gone: 1.2, gone_to_banner: 21.7, banner_to_answer: 0.9, to_answer: 23.8,
           test_command: null}
  version_added: 0.3.0
rebooted:
  description: The host came back on a new boot.
  returned: O(state=executed), success
  type: bool
jumped:
  description:
    - Whether the host left its boot. V(true) once a new boot id was read; V(false) when nothing was jumped (the load
      or the trigger failed; the old boot reported a failed jump or a trigger that never ran; or the host kept
      answering on its old boot id for O(not_jumped_after) seconds without ever being seen gone; then the image was
      unloaded); V(null) when that is unknown (the host went away and did not come back within O(kexec_timeout), or
      this run still ran on the old boot without having queued the jump).
    - Returned on every O(state=executed) result, failures included, whatever raised; roles decide from it, never
      from RV(msg).
  returned: O(state=executed)
  type: bool
old_boot_answers:
  description: How many answers after the trigger still came from the old boot.
  returned: O(state=executed), after the trigger
  type: int
boot_id_before:
  description: The boot id before the jump.
  returned: O(state=executed), once read
  type: str
boot_id_after:
  description: The new boot id (well-formed and different from the old one); V(null) where none was read.
  returned: O(state=executed), after the trigger
  type: str
downtime:
  description: Seconds from starting the jump to the first successful answer on the new boot; V(null) where there
    was none.
  returned: O(state=executed), after the trigger
  type: float
elapsed:
  description: Seconds the whole task took, load included.
  returned: O(state=executed), success
  type: float
detect_latency:
  description: Seconds from the host first answering again to the new boot id being read; with RV(detection=ssh
    banner) from the banner's return, with RV(detection=connection) the attempt that read it (one round trip).
  returned: O(state=executed), success
  type: float
attempts:
  description: Connection attempts made while waiting.
  returned: O(state=executed), success
  type: int
method:
  description: The jump method, O(method) resolved (V(kexec) or V(systemctl)); for O(state=executed), the one used.
  returned: O(state=loaded), O(state=executed) on success
  type: str
accepted_loss:
  description: The live update state this jump will lose, as accepted by O(accept_loss); empty where none.
  returned: O(state=loaded)
  type: list
  elements: str
target:
  description:
    - Whether the target kernel reads what this kernel hands over (see O(target_check)). C(status) V(compatible),
      V(incompatible) or V(unknown); C(handed_over), the compatibles handed over; C(missing), those the target lacks;
      C(sides), each of them with what the target accepts of its family (C(sends memfd-v2, target accepts memfd-v3));
      C(consequences), what would happen; C(target_release) and C(source_release); C(target_compatibles); C(source),
      where the target's support was read (V(image), or the path of the config file read instead); C(msg) where not
      compatible. The LUO entry counts as handed over only where something rides on it (sessions that processes
      hold, units that preserve through it).
  returned: O(state=loaded); for O(state=executed) in RV(load)
  type: dict
  sample: {status: incompatible, handed_over: [kho-v4, luo-v5, memblock-v1, memfd-v2, reserve-mem-v1], missing: [memfd-v2],
           target_release: 7.3.4, source_release: 7.3.4, source: image}
  version_added: 0.3.0
unloaded:
  description: With O(state=executed), a jump that did not happen unloaded the image this run loaded (as its answer
    says, or, the answer lost, its jump status on the host); V(false) where it left the image as it was.
  returned: O(state=executed), when the jump did not happen
  type: bool
  version_added: 0.3.0
loaded_here:
  description:
    - This task loaded an image (C(kexec -s -l)) where none, or another one, was loaded before it. V(false) where the
      image the record names was loaded already (also where it was loaded again, RV(reloaded)), or in check mode.
    - In a failed task's answer, whether this task left its image loaded (its undo failed).
    - A rollback unloads only an image its own run loaded.
  returned: O(state=loaded); for O(state=executed) in RV(load)
  type: bool
  version_added: 0.3.0
dropped_regions:
  description: The C(reserve_mem) regions of the running kernel that the target command line does not keep (each
    one named in O(drop_regions), else the load is refused).
  returned: O(state=loaded); for O(state=executed) in RV(load)
  type: list
  elements: str
  version_added: 0.3.0
returned:
  description:
    - With O(return=on_failure), the host is back on its old kernel after a failed check, and the old kernel's own
      facts say it came home (RV(return)); the run still fails.
  returned: O(state=executed), where O(return=on_failure) and the new boot failed a check
  type: bool
  version_added: 0.4.0
return:
  description:
    - "With O(return=on_failure), the way back's record - C(verdict) (C(returned to OLD: the new kernel NEW failed at
      CHECK), C(failed after the jump and the return), C(failed after the jump), or, where the host's own return ran
      first, C(returned by the host: not confirmed within N s)); C(returned); C(failed_check); C(failed_release);
      C(failure), the failed check's message; C(decision), why the return was made or not; C(returned_to); C(return),
      the old kernel's receiver checks (C(failures), C(unconfirmed), C(taken)), V(null) where no return came back with
      its facts; C(back), the return's own run (C(jumped), C(boot_id_after) - the boot the host is on now -
      C(downtime), C(failed), C(msg))."
    - Where the host came home and O(facts_after) is set, C(ansible_facts.kho) are the old kernel's, read on its
      return (the host as it is now), not the failed kernel's.
  returned: O(state=executed), where O(return=on_failure) and the new boot failed a check
  type: dict
  sample: {verdict: "returned to 7.3.4: the new kernel 7.2.13 failed at test_command", returned: true,
           failed_check: test_command, failed_release: 7.2.13, returned_to: 7.3.4,
           decision: "the new kernel failed at test_command: handing the host back to 7.3.4 (/boot/vmlinuz-7.3.4)",
           return: {failures: [], unconfirmed: [], taken: {kept: [oops]}},
           back: {jumped: true, boot_id_after: 0b5c3bfe-0d59-4b5a-9c7e-0f5d6c2c1e11, downtime: 41.2, failed: null}}
  version_added: 0.4.0
undone:
  description:
    - In a failed task's answer, what this task changed on the host and undid itself before it answered, in order
      (V(the host's own return disarmed), V(the image unloaded), V(the finalize done by this task aborted)); empty
      where it changed nothing (a refusal) or had nothing left to undo.
  returned: failure, O(state=loaded) or O(state=executed) on the old boot
  type: list
  elements: str
  version_added: 0.4.0
failed_check:
  description:
    - The check a new boot that answered failed, a stable word for roles to decide from (the handover role's way
      back does), never from RV(msg). V(test_command) where O(test_command) failed; V(verification) where the new
      kernel has no handover data (O(verify_handover)).
  returned: O(state=executed), where the host came back on a new boot and a check failed
  type: str
  sample: test_command
  version_added: 0.4.0
handover_received:
  description: The new kernel has handover data (C(kho/in)), checked with O(verify_handover); V(null) where the host
    did not come back on a new boot or the check was not asked for.
  returned: O(state=executed), after the trigger
  type: bool
detection:
  description:
    - How the return was watched for. V(ssh banner) where the address the connection dials answered with an SSH
      banner right before the jump; V(connection) otherwise (every poll a real attempt through the connection
      plugin, reset first).
  returned: O(state=executed), after the trigger
  type: str
  sample: connection
  version_added: 0.3.0
facts_read:
  description: With O(facts_after), whether the new boot's facts were read (RV(ansible_facts)).
  returned: O(state=executed) with O(facts_after), on success
  type: bool
  version_added: 0.4.0
facts_source:
  description:
    - With RV(facts_read), how they were read. V(evidence) - one shell read of the new kernel's own files (its trees,
      C(reserve_mem_param), its KHO and LUO log records, C(/proc/misc)), no Python started on the booting host, where
      that is all the checks need (no O(pstore_search), and the load's target check names no live update entry);
      user space's part (C(liveupdate.systemd), pstore, the boot images) is then absent from RV(ansible_facts).
      Without O(test_command) that read comes with the poll that first sees the new boot (behind a test of its boot
      id, so that no poll of the old boot pays for it), else it is a command of its own after O(test_command).
      V(module) - the module's own read code, run with the host's Python.
  returned: O(state=executed) with O(facts_after), when RV(facts_read)
  type: str
  version_added: 0.4.0
ansible_facts:
  description: With O(facts_after) and RV(facts_read), the new boot's C(kho) facts, as
    M(kexec.kho.kho_facts) returns them (RV(kexec.kho.kho_facts#module:ansible_facts)).
  returned: O(state=executed) with O(facts_after), when RV(facts_read)
  type: dict
  version_added: 0.4.0
pstore_found:
  description: With O(facts_after), the strings of O(pstore_search) found in the new boot's pstore records, sorted.
  returned: O(state=executed) with O(facts_after), when RV(facts_read)
  type: list
  elements: str
  version_added: 0.4.0
self_return:
  description:
    - The host's own return (O(confirm_timeout)) - C(armed) (what the load's run armed - C(timeout), C(kexec_count),
      C(old_release), C(new_release), C(paths) - or V(null) where nothing was armed or the answer was lost), and
      C(note), the host's note of a return it made by itself, where the boot that answered carries this run's (its
      C(state) - C(returning), C(load-failed), C(exit) - C(new_boot_id), C(old_release), C(new_release), C(timeout)).
  returned: O(state=executed), after the trigger
  type: dict
  version_added: 0.4.0
run_id:
  description: The run id this run wrote in its jump status and in what it armed on the host.
  returned: O(state=executed), after the trigger
  type: str
  version_added: 0.4.0
confirmed:
  description: O(state=confirmed) - the confirm won (nothing returns); V(false) where nothing was armed or the host's
    own return won the race.
  returned: O(state=confirmed), not in check mode
  type: bool
  version_added: 0.4.0
returning:
  description: O(state=confirmed) - the host's own return had won the race before the confirm (the host is returning).
  returned: O(state=confirmed), not in check mode
  type: bool
  version_added: 0.4.0
note:
  description: O(state=disarmed) - the host's note of a return it made by itself, as read before it was removed (fields
    as in RV(self_return)), or V(null).
  returned: O(state=disarmed), not in check mode
  type: dict
  version_added: 0.4.0
removed:
  description: O(state=disarmed) - the paths removed.
  returned: O(state=disarmed), not in check mode
  type: list
  elements: str
  version_added: 0.4.0
waited:
  description: Seconds waited before giving up.
  returned: O(state=executed), when the host did not come back
  type: float
"""

import functools

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kexec.kho.plugins.module_utils._kho import host, jump_status, paths, self_return
from ansible_collections.kexec.kho.plugins.module_utils._kho.finalize import FinalizeError
from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import (
    ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, REQUIRED_IF, Changes, Kexec, KexecError, check_boot, check_values, ensure_loaded,
    ensure_unloaded, stage_load, start_jump,
)
from ansible_collections.kexec.kho.plugins.module_utils._kho.stage import StageError

OWN_ERRORS = (KexecError, FinalizeError, host.NeedsRoot, jump_status.StatusError, self_return.Refused, StageError)


def state_run(module, kho, kexec: Kexec, changes: Changes) -> dict:
    """The state asked for.  state=executed first says on the host who it is (its jump status: the action's run id,
    this process), before anything changes, so that the controller's polls can tell it from a run that never began."""
    p = module.params
    check_boot(kho, p["expect_boot_id"], host.internal(p)["refuse_boot_id"])
    if p["state"] == "executed" and not module.check_mode:
        changes.status = jump_status.Writer(paths.JUMP_STATUS, p["run_id"])
        changes.tell()
    where = self_return.where_for(kho)
    if p["state"] in ("confirmed", "disarmed"):  # the host's own return: nothing to mount, nothing loaded
        if module.check_mode:
            found = self_return.present(where)
            return {"changed": bool(found), "present": found, "msg": f"would remove {len(found)} path(s)"}
        return self_return.confirmed(where) if p["state"] == "confirmed" else self_return.disarmed(where)
    mounted = host.ensure_debugfs(module, kho)
    if p["state"] == "executed":  # the host's part of the action: load, arm where asked, queue the jump
        arm = (functools.partial(self_return.arm_for, run_id=p["run_id"], timeout=p.get("confirm_timeout"),
                                 boot_id=kho.boot_id(), where=where, module=module, binary=kexec.binary)
               if p.get("confirm_timeout") else None)
        result = start_jump(module, kho, kexec, p, changes, arm)
    elif p["state"] == "loaded":
        result = (stage_load if p["stage_ttl"] else ensure_loaded)(module, kho, kexec, p, changes=changes)
    else:
        result = ensure_unloaded(module, kho, kexec, p["owner"] if p["staged"] else None)
    return {**result, "changed": result["changed"] or mounted}


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=REQUIRED_IF,
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    try:
        check_values(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc), triggered=False, loaded_here=False, finalized_here=False)
    kho = host.from_params(module.params)
    changes = Changes(disarm=functools.partial(self_return.disarm, self_return.where_for(kho)))
    try:
        result = state_run(module, kho, Kexec(module, module.params["state_dir"]), changes)
    except Exception as exc:  # pylint: disable=broad-except  # the module's own failure: answered, never lost
        changes.failed()
        why = str(exc) if isinstance(exc, OWN_ERRORS) else f"{type(exc).__name__}: {exc}"
        # What is left of this run's changes (undone already where it could): what a rollback still has to undo.
        module.fail_json(msg=why, triggered=False, loaded_here=changes.loaded, finalized_here=changes.finalized,
                         undone=changes.undone, **({"path": exc.path} if isinstance(exc, host.NeedsRoot) else {}))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
