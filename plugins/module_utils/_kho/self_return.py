# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's own return ("commit confirmed"), as the text armed before the jump.  Not a public API.

Armed on the old boot for the next one: a systemd unit (paths.RETURN_UNIT, enabled by its link in sysinit.target.wants)
that runs a POSIX sh script (paths.RETURN_DIR/return.sh) under /bin/sh.  Both live on disk, because /run is the
leaving kernel's tmpfs and the next boot would never see them there; so a cold boot sees them too, and the script acts
only on the boot that is this run's kexec: another boot id than the one that armed it, a KHO handover received, its
kexec-metadata naming the old release with the count the old kernel sent, the release the jump loaded.  On any other
boot it removes itself and does nothing.  On that boot it waits until the kernel has been up ``timeout`` seconds (and
at most that long itself) for the controller's confirm, the rename of its marker ``armed`` to ``confirmed``; unless the
script's own rename of it to ``returning`` wins, it loads the recorded kernel with ``kexec -s -l`` and jumps back.
Exactly one of the two renames succeeds, so a late confirm and the return never both happen.  The unit and its link
are removed before anything else on the first boot that is not the arming one, the rest on every path; a return leaves
one line, paths.RETURN_NOTE, for the controller to read (and remove) when it next reaches the host.  docs/way-back.md.

Every value is validated by full match before it is written, and written single-quoted: nothing in the script is
built from a shell string of input.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields

from ansible_collections.kexec.kho.plugins.module_utils._kho import boot_files, files, jump_status, metadata, paths
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import GrammarError, check_length
from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import load_argv, target_cmdline

SHELL = "/bin/sh"
METHODS = ("kexec", "systemctl")  # how the script jumps back: kexec -e after a sync, or systemctl kexec
TIMEOUT = (1, 86400)  # seconds of the new kernel's uptime the confirm may take
MAX_COUNT = 2**32 - 1  # kexec-metadata's count is a u32

PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9._+@-]+)+")  # no ., .. (checked apart), no space, quote, $, % or newline
TOKEN = re.compile(r"[A-Za-z0-9_.,:%+=/@-]+")  # one word of a kernel command line
LINE = re.compile(rf" *{TOKEN.pattern}(?: +{TOKEN.pattern})* *")  # spaces only: a tab or a newline is refused
BINARY = re.compile(r"kexec|" + PLAIN_PATH.pattern)
FORMS = {
    "path": "an absolute path of A-Z a-z 0-9 . _ + @ - between slashes, without . or .. components",
    "release": "1 to 128 of A-Z a-z 0-9 . _ + ~ : @ -",
    "boot_id": "a boot id, 8-4-4-4-12 lowercase hex digits",
    "run_id": "1 to 64 of A-Z a-z 0-9 . _ : -",
    "cmdline": "words of A-Z a-z 0-9 _ . , : % + = / @ - separated by spaces",
    "binary": "kexec, or the absolute path of one",
}
STATES = ("returning", "load-failed", "exit")  # the note's last words: about to load, the load failed, the jump returned


class Refused(ValueError):
    """A value that would not be written into the script as one plain word."""


@dataclass(frozen=True)
class Where:
    """Where the artefacts go and what the script reads: the host's paths, or a test's tree (under())."""

    directory: str = paths.RETURN_DIR
    note: str = paths.RETURN_NOTE
    unit: str = paths.RETURN_UNIT
    wants: str = paths.RETURN_WANTS
    debugfs: str = paths.DEBUGFS
    procfs: str = paths.PROCFS
    devfs: str = paths.DEVFS

    @classmethod
    def under(cls, root: str) -> "Where":
        return cls(**{f.name: root.rstrip("/") + getattr(cls, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Armed:
    """What the next boot must be for the script to act, and the way back it then takes."""

    run_id: str  # the action's run id (jump_status.RUN_ID)
    old_boot_id: str  # the boot that armed it
    old_release: str  # the way back's release: the next boot's kexec-metadata must name it
    new_release: str  # the release the jump loaded
    kexec_count: int  # the count the old kernel sends in its kexec-metadata (its own incoming count plus one)
    timeout: int  # kho_handover_confirm_timeout: seconds of the new kernel's uptime
    kernel: str
    initrd: str | None
    cmdline: str
    kexec: str = "kexec"  # the binary: resolved on the host, or found on PATH
    method: str = "kexec"


def _refuse(name: str, value, form: str):
    raise Refused(f"{name} is {value!r}: the host's self-return writes only {FORMS[form]} into its script; nothing "
                  "was armed")


def _path(name: str, value) -> str:
    if not isinstance(value, str) or not PLAIN_PATH.fullmatch(value) or {".", ".."} & set(value.split("/")):
        _refuse(name, value, "path")
    return value


def check(armed: Armed, where: Where) -> None:
    """Every value by full match, before any is written; Refused names the first that is not a plain word."""
    if not isinstance(armed.run_id, str) or not jump_status.RUN_ID.fullmatch(armed.run_id):
        _refuse("run_id", armed.run_id, "run_id")
    if not isinstance(armed.old_boot_id, str) or not jump_status.BOOT_ID.fullmatch(armed.old_boot_id):
        _refuse("old_boot_id", armed.old_boot_id, "boot_id")
    for name in ("old_release", "new_release"):
        value = getattr(armed, name)
        if not isinstance(value, str) or not boot_files.SAFE.fullmatch(value):
            _refuse(name, value, "release")
    for name, value, (low, high) in (("kexec_count", armed.kexec_count, (1, MAX_COUNT)),
                                     ("timeout", armed.timeout, TIMEOUT)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Refused(f"{name} is {value!r}: a whole number from {low} to {high}; nothing was armed")
    _path("kernel", armed.kernel)
    if armed.initrd is not None:
        _path("initrd", armed.initrd)
    if not isinstance(armed.cmdline, str) or not LINE.fullmatch(armed.cmdline):
        _refuse("cmdline", armed.cmdline, "cmdline")
    try:
        check_length(armed.cmdline, "cmdline")
    except GrammarError as exc:
        raise Refused(f"{exc}; nothing was armed") from exc
    if not isinstance(armed.kexec, str) or not BINARY.fullmatch(armed.kexec) or "/." in armed.kexec:
        _refuse("kexec", armed.kexec, "binary")
    if armed.method not in METHODS:
        raise Refused(f"method is {armed.method!r}: one of {', '.join(METHODS)}; nothing was armed")
    for f in fields(where):
        _path(f.name, getattr(where, f.name))
    if where.directory.count("/") < 2:
        _refuse("directory", where.directory, "path")


GATE = re.compile(r"[A-Za-z0-9_.,:%+=/@ ~-]*")


def quote(value) -> str:
    """The one way a value enters the script: single-quoted, after the writer's own gate (a value no check above
    passed is a bug here, never a write)."""
    text = str(value)
    if not GATE.fullmatch(text):
        raise AssertionError(f"kexec.kho bug: the self-return's writer was given {text!r}, which no check should "
                             "have passed")
    return f"'{text}'"


SCRIPT = """#!/bin/sh
# kexec.kho: the host's own return ("commit confirmed"), generated; every value is written single-quoted (main).
# It acts on one boot only, this run's kexec from old_release to new_release: unless confirmed within timeout s of
# that boot, it loads old_release again and jumps back.  On its first run on any boot but the arming one it removes
# its unit, and it removes itself on every path (docs/way-back.md in the kexec.kho collection).

say() {{
    printf '<5>kexec-kho-return: %s\\n' "$*" >> "$kmsg" 2>/dev/null
    printf 'kexec-kho-return: %s\\n' "$*" >&2
}}

disarm() {{
    rm -f "$wants" "$unit" "$dir/{script}" "$dir/{armed}" "$dir/{confirmed}" "$dir/{returning}"
    rmdir "$dir" 2>/dev/null
    rmdir "$state" 2>/dev/null
    return 0
}}

tell() {{
    printf '%s %s %s %s %s %s %s\\n' "$run" "$old_boot" "$boot" "$old_release" "$new_release" "$timeout" "$1" \\
        > "$note.new" && mv -f "$note.new" "$note"
}}

# Why this boot is not the kexec this run made (and nothing is to be done), or nothing where it is.
unexpected() {{
    [ -d "$kho_in" ] || {{ echo "no handover data under $kho_in: a cold boot, or a kexec without KHO"; return; }}
    version=$(cat "$meta" 2>/dev/null | od -An -tu4 -N4 | tr -d ' \\n')
    previous=$(cat "$meta" 2>/dev/null | dd bs=1 skip={meta_at} count={meta_len} 2>/dev/null | tr -d '\\000')
    got=$(cat "$meta" 2>/dev/null | dd bs=1 skip={count_at} count=4 2>/dev/null | od -An -tu4 | tr -d ' \\n')
    release=$(cat "$osrelease" 2>/dev/null)
    if [ "$version" != 1 ]; then echo "no kexec-metadata v1 at $meta"
    elif [ "$previous" != "$old_release" ]; then echo "the previous kernel was $previous, not $old_release"
    elif [ "$got" != "$count" ]; then echo "the kexec count is $got, not $count"
    elif [ "$release" != "$new_release" ]; then echo "this kernel is $release, not $new_release"
    fi
}}

# Until the kernel has been up $timeout s (and at most that long here), or the marker is renamed.
wait_confirm() {{
    n=0
    while [ -e "$dir/{armed}" ] && [ "$n" -lt "$timeout" ]; do
        up=0
        read -r up rest 2>/dev/null < "$uptime"
        up=${{up%%.*}}
        case $up in '' | *[!0-9]*) up=0 ;; esac
        [ "$up" -ge "$timeout" ] && return 0
        sleep 1
        n=$((n + 1))
    done
}}

jump_back() {{
    {load}
    rc=$?
    if [ "$rc" -ne 0 ]; then tell "load-failed $rc"; say "loading $old_release failed (rc $rc)"; return 1; fi
    sync
    {jump}
    rc=$?
    {queued}
    tell "exit $rc"
    say "the jump back returned (rc $rc): the host stays on $new_release"
    {unload} 2>/dev/null
    return 1
}}

main() {{
    run={run} old_boot={old_boot} old_release={old_release} new_release={new_release}
    count={count} timeout={timeout}
    dir={dir} state={state} note={note} unit={unit} wants={wants} kmsg={kmsg}
    kho_in={kho_in} meta={meta} osrelease={osrelease} uptime={uptime} boot_id={boot_id}
    boot=$(cat "$boot_id" 2>/dev/null)
    case $boot in '' | *[!0-9a-f-]*) boot=unknown ;; esac
    if [ "$boot" = "$old_boot" ]; then say "on the boot that armed it: nothing to do before the jump"; return 0; fi
    rm -f "$wants" "$unit"  # no later boot runs it, whatever happens on this one
    why=$(unexpected)
    if [ -n "$why" ]; then say "not the kexec of run $run ($why): nothing done"; disarm; return 0; fi
    say "the kexec of run $run: waiting for the confirm until $timeout s after this boot"
    wait_confirm
    if ! mv "$dir/{armed}" "$dir/{returning}" 2>/dev/null; then say "confirmed: nothing done"; disarm; return 0; fi
    tell returning
    say "not confirmed within $timeout s of this boot: returning to $old_release"
    disarm
    jump_back
}}

main "$@"
exit $?
"""


def script(armed: Armed, where: Where = Where()) -> str:
    """The script's text (check first: Refused names a value that is not a plain word)."""
    check(armed, where)
    kho = where.debugfs.rstrip("/") + "/" + paths.KHO
    argv = load_argv(armed.kexec, armed.kernel, armed.initrd, " ".join(armed.cmdline.split()))  # canonical spaces
    jump = ([armed.kexec, "-e"] if armed.method == "kexec" else ["systemctl", "kexec"])
    words = {
        "run": armed.run_id, "old_boot": armed.old_boot_id, "old_release": armed.old_release,
        "new_release": armed.new_release, "count": armed.kexec_count, "timeout": armed.timeout,
        "dir": where.directory, "state": os.path.dirname(where.note), "note": where.note, "unit": where.unit,
        "wants": where.wants, "kmsg": where.devfs.rstrip("/") + "/kmsg", "kho_in": kho + "/in",
        "meta": kho + "/" + paths.KEXEC_METADATA, "osrelease": where.procfs + "/sys/kernel/osrelease",
        "uptime": where.procfs + "/uptime", "boot_id": where.procfs + "/sys/kernel/random/boot_id",
    }
    return SCRIPT.format(
        **{k: quote(v) for k, v in words.items()},
        load=" ".join(map(quote, argv)), jump=" ".join(map(quote, jump)),
        # systemctl kexec returns once the job is queued: the jump is systemd's now, and the image must stay loaded
        queued=('if [ "$rc" -eq 0 ]; then say "the jump back is queued (systemctl kexec)"; return 0; fi'
                if armed.method == "systemctl" else ":"),
        unload=" ".join(map(quote, [armed.kexec, "-u"])), script=paths.RETURN_SCRIPT, armed=paths.RETURN_ARMED,
        confirmed=paths.RETURN_CONFIRMED, returning=paths.RETURN_RETURNING, meta_at=metadata.RELEASE_AT,
        meta_len=metadata.RELEASE_LEN, count_at=metadata.COUNT_AT)


UNIT = """# kexec.kho: the host's own return for run {run}, generated; its script removes it on its first run on a new boot.
[Unit]
Description=kexec.kho: return to {old_release} unless the kexec to {new_release} is confirmed within {timeout} s
DefaultDependencies=no
After=local-fs.target
RequiresMountsFor={directory} {debugfs}
Conflicts=shutdown.target
Before=shutdown.target
IgnoreOnIsolate=yes

[Service]
Type=exec
ExecStart={interpreter} {script}
TimeoutStopSec=10

[Install]
WantedBy=sysinit.target
"""


def unit(armed: Armed, where: Where = Where()) -> str:
    """The unit's text: early (sysinit, after the local file systems), kept through an emergency isolate, stopped by
    a shutdown, never waited for by the boot (Type=exec)."""
    check(armed, where)
    return UNIT.format(run=armed.run_id, old_release=armed.old_release, new_release=armed.new_release,
                       timeout=armed.timeout, directory=where.directory, debugfs=where.debugfs, interpreter=SHELL,
                       script=f"{where.directory}/{paths.RETURN_SCRIPT}")


def artefacts(armed: Armed, where: Where = Where()) -> list:
    """What arming writes, in order: (path, bytes, mode) for each file; the unit's link (where.wants) comes last."""
    return [(f"{where.directory}/{paths.RETURN_SCRIPT}", script(armed, where).encode(), 0o700),
            (f"{where.directory}/{paths.RETURN_ARMED}", f"{armed.run_id}\n".encode(), 0o600),
            (where.unit, unit(armed, where).encode(), 0o644)]


def install(armed: Armed, where: Where = Where(), module=None) -> list:
    """Arm: every file written atomically (with ``module``, in its SELinux context), then the link that enables the
    unit (last: until it exists, nothing runs at boot).  Returns the paths written.  A failure leaves what disarm()
    removes."""
    written = []
    for path, data, mode in artefacts(armed, where):
        files.write_atomic(path, data, module=module, mode=mode,
                           dir_mode=0o700 if path.startswith(where.directory) else 0o755)
        written.append(path)
    os.makedirs(os.path.dirname(where.wants), mode=0o755, exist_ok=True)
    tmp = f"{where.wants}.kexec-kho.new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(where.unit, tmp)
    os.replace(tmp, where.wants)
    return [*written, where.wants]


MARKERS = (paths.RETURN_SCRIPT, paths.RETURN_ARMED, paths.RETURN_CONFIRMED, paths.RETURN_RETURNING)  # in directory


def disarm(where: Where = Where(), note: bool = False) -> list:
    """Remove whatever is armed (the script's own disarm, from the controller's side), and with ``note`` the note
    too: the paths removed."""
    removed = []
    for path in (where.wants, f"{where.wants}.kexec-kho.new", where.unit,
                 *(f"{where.directory}/{n}" for n in MARKERS), *([where.note] if note else [])):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    for directory in (where.directory, os.path.dirname(where.note)):
        try:
            os.rmdir(directory)
            removed.append(directory)
        except OSError:  # absent, or not empty (the note is left for the controller)
            pass
    return removed


def confirm(where: Where = Where()) -> bool:
    """The controller's confirm on the new boot: the rename of the marker, which only one side wins; True where it
    won (nothing returns), False where there was nothing to confirm (the script took it: the host is returning, or
    it never was armed).  Disarms in both cases."""
    try:
        os.rename(f"{where.directory}/{paths.RETURN_ARMED}", f"{where.directory}/{paths.RETURN_CONFIRMED}")
        won = True
    except FileNotFoundError:
        won = False
    disarm(where)
    return won


def parse_note(text) -> dict | None:
    """The host's note of a return it made by itself (the script's tell), or None where the text is not one."""
    words = str(text or "").strip().split(" ")
    if len(words) < 7 or "\n" in str(text or "").strip():
        return None
    run, old_boot, new_boot, old_release, new_release, timeout, *state = words
    good = (jump_status.RUN_ID.fullmatch(run) and jump_status.BOOT_ID.fullmatch(old_boot)
            and (new_boot == "unknown" or jump_status.BOOT_ID.fullmatch(new_boot))
            and all(boot_files.SAFE.fullmatch(r) for r in (old_release, new_release)) and timeout.isdigit()
            and (state == [STATES[0]] or (len(state) == 2 and state[0] in STATES[1:] and state[1].isdigit())))
    if not good:
        return None
    return {"run_id": run, "old_boot_id": old_boot, "new_boot_id": None if new_boot == "unknown" else new_boot,
            "old_release": old_release, "new_release": new_release, "timeout": int(timeout), "state": state[0],
            "rc": int(state[1]) if len(state) == 2 else None}


def read_note(where: Where = Where()) -> dict | None:
    """The note, where one is on disk and well-formed (at most one short line is read)."""
    try:
        with open(where.note, encoding="ascii", errors="replace") as fh:
            return parse_note(fh.read(512))
    except OSError:
        return None


def arm_for(result: dict, run_id: str, timeout: int, boot_id: str | None, where: Where = Where(), module=None,
            binary: str | None = None, systemd: str = paths.SYSTEMD_RUNNING) -> dict:
    """Arm the host's own return for the jump start_jump is about to queue (kho_kexec confirm_timeout): ``result``
    is the load's (its way_back, target, method, interface).  Refused, before anything is written, where no return
    can be promised; the answer says what was armed."""
    way = result.get("way_back") or {}
    if not way.get("possible"):
        raise Refused(f"confirm_timeout is {timeout}, but no way back was recorded: {way.get('why')}; nothing was armed")
    if result.get("interface") == "finalize":
        raise Refused("confirm_timeout: this kernel hands over at finalize (6.16 to 6.18), where the new kernel's own "
                      "return cannot be armed; nothing was armed (use confirm_timeout: 0)")
    if not os.path.isdir(systemd):
        raise Refused(f"confirm_timeout: the host's own return is a systemd unit, and systemd is not running here "
                      f"({systemd} is missing); nothing was armed")
    kho = where.debugfs.rstrip("/") + "/" + paths.KHO
    try:
        sent = metadata.read(f"{kho}/{paths.KEXEC_METADATA_OUT}")
    except (OSError, metadata.MetadataError) as exc:
        raise Refused(f"confirm_timeout: the count this kernel sends is unreadable ({exc}): the new boot could not be "
                      "told from a cold one; nothing was armed") from exc
    armed = Armed(run_id=run_id, old_boot_id=boot_id, old_release=way.get("release"),
                  new_release=(result.get("target") or {}).get("target_release"), kexec_count=sent["kexec_count"],
                  timeout=timeout, kernel=way.get("kernel"), initrd=way.get("initrd"),
                  cmdline=target_cmdline(way.get("cmdline") or ""), kexec=binary or "kexec",
                  method="systemctl" if result.get("method") == "systemctl" else "kexec")
    check(armed, where)  # Refused names the value, before anything is written
    return {"armed": True, "timeout": timeout, "kexec_count": armed.kexec_count, "old_release": armed.old_release,
            "new_release": armed.new_release, "paths": install(armed, where, module)}


def where_for(kho) -> Where:
    """The host's paths, with the kernel's file systems where the module's *_root options put them."""
    return Where(debugfs=kho.debugfs, procfs=kho.procfs, devfs=kho.devfs)


def present(where: Where = Where()) -> list:
    """What of the self-return is on disk now (check mode's answer for state=confirmed and state=disarmed)."""
    return [path for path in (where.wants, where.unit, *(f"{where.directory}/{n}" for n in MARKERS), where.note)
            if os.path.lexists(path)]


def confirmed(where: Where = Where()) -> dict:
    """kho_kexec state=confirmed, on the new boot: the confirm (confirm()), and whether the host was returning by
    itself already (its script won the rename: the confirm came too late)."""
    returning = os.path.exists(f"{where.directory}/{paths.RETURN_RETURNING}")
    armed = os.path.exists(f"{where.directory}/{paths.RETURN_ARMED}")
    won = confirm(where)
    # The script removes its marker right after it writes its note: the note is the word that it took the return
    # (returning, or a jump back that failed: load-failed, exit), read and removed here so that it is said once.
    note = None if won else read_note(where)
    if note is not None:
        disarm(where, note=True)
    returning = not won and (returning or (note or {}).get("state") == STATES[0])
    return {"changed": armed or returning or note is not None, "confirmed": won, "returning": returning, "note": note,
            "msg": ("confirmed: the host's own return is disarmed" if won else
                    "too late: the host is returning by itself" if returning else
                    f"too late: the host's own return ran and failed ({note['state']} {note['rc']})" if note else
                    "nothing was armed")}


def disarmed(where: Where = Where()) -> dict:
    """kho_kexec state=disarmed: whatever is armed removed, and the note of a return the host made by itself read
    (returned as ``note``) and removed: nothing of the self-return is left on disk."""
    note = read_note(where)
    removed = disarm(where, note=True)
    return {"changed": bool(removed), "removed": removed, "note": note,
            "msg": f"removed {len(removed)} path(s) of the host's own return" if removed else "nothing was armed"}
