# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A staged load (kho_kexec stage_ttl, issue 38): the image loaded while the host still serves, for the run that
holds the handover lock, and unloaded by the host itself when its time to live passes.  Not a public API.

On disk, under the state directory beside the load's record:

- ``staged``: one line, ``RUN NONCE EXPIRES REQUEST`` (REQUEST: owner's ``request``, or ``-``), written after the
  load and removed with its record (an unload, a new load) and by the switch that takes the load up, before it
  queues the jump;
- ``staged-expired``: one line, ``RUN AT STATE KERNEL``, the host's word that it ended a staged load whose time ran
  out (STATE: ``unloaded``, or ``unload-failed``), for a later run to say;
- ``switch.sh`` and ``switch.json``, where the stage was told what its task asked (owner's ``request``): the switch
  as one sh run (switch_script), and the answer it gives the controller (the stage's, with the way back read at the
  stage), so that the window holds no module run.

The expiry is a detached sh job (a systemd timer where systemd runs, else a sleeping process in its own session),
built only from checked values, each quoted.  When it fires it acts only where ``staged`` still holds its exact
line: a switch, an unload, a new load or another run leave it nothing to do.  It then unloads, writes the note and
releases the handover lock where the staging run still holds it, all under the lock's flock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import time

from ansible_collections.kexec.kho.plugins.module_utils._kho import files, host, lock, paths

STAGED, EXPIRED = "staged", "staged-expired"  # under the state directory
SWITCH_SH, SWITCH_ANSWER = "switch.sh", "switch.json"  # ... and the switch's, where the stage knows its request
RUN = re.compile(r"[A-Za-z0-9._:-]{1,200}")  # a run id, as _owner.this_run makes them (host:pid:start:nonce)
REQUEST = re.compile(r"[0-9a-f]{64}")  # what a task asks to load, as request_digest makes it
# The options that make a load what it is: a switch whose digest of them is the stage's takes the stage's load up.
REQUEST_OPTIONS = ("kernel", "initrd", "cmdline", "append", "method", "ensure_kho", "finalize", "force",
                   "replace_loaded", "accept_loss", "drop_regions", "target_check", "state_dir", "lock_path",
                   "mount_debugfs", "_internal")
MARK = "KHO-SWITCH"  # the switch's word to the controller, its last line: MARK queued | fallback WHY | failed WHY STATE
ANSWER_BYTES = 1 << 18  # the stage's answer, read back at most
MAX_TTL = 86400
UNLOADED, UNLOAD_FAILED = "unloaded", "unload-failed"


class StageError(Exception):
    pass


def run_of(owner):
    """The run id in ``owner`` (kho_kexec's, set by the action plugin), as given: None where there is none."""
    return owner.get("run") if isinstance(owner, dict) else None


def check_run(owner) -> str:
    run = run_of(owner)
    if not isinstance(run, str) or not RUN.fullmatch(run):
        raise StageError(f"a staged load needs the run that stages it (owner, set by the action plugin): {run!r} is "
                         f"not a run id ({RUN.pattern})")
    return run


def request_digest(args: dict) -> str:
    """What a task asks to load (its REQUEST_OPTIONS as given), as a sha256: the action's, at the stage and at the
    switch, from the task's own arguments."""
    wanted = {k: args.get(k) for k in REQUEST_OPTIONS}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True, default=str).encode()).hexdigest()


def request_of(owner) -> str | None:
    request = owner.get("request") if isinstance(owner, dict) else None
    return request if isinstance(request, str) and REQUEST.fullmatch(request) else None


def _path(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, name)


def expiry_job(line: str, run: str, state_dir: str, kexec: str, kernel: str, lock_path: str) -> str:
    """sh: what the host does when the time to live passes (see the module's docstring)."""
    q = shlex.quote
    stage, note, record = (q(_path(state_dir, n)) for n in (STAGED, EXPIRED, "loaded.json"))
    held = q(f'"run": "{run}"')  # the lock's JSON (sort_keys) as lock.py writes it
    return (f"exec 9>>{q(lock_path + '.guard')} && {{ command -v flock >/dev/null 2>&1 && flock 9; }}; "
            f'[ "$(head -n 1 {stage} 2>/dev/null)" = {q(line)} ] || exit 0; '
            f"if {q(kexec)} -u; then s={UNLOADED}; else s={UNLOAD_FAILED}; fi; "
            f"printf '%s %s %s %s\\n' {q(run)} \"$(date +%s)\" \"$s\" {q(kernel)} > {note}.new && mv -f {note}.new {note}; "
            f'[ "$s" = {UNLOADED} ] && rm -f {record}; rm -f {stage}; '  # the note first: no reader sees neither
            f"if grep -qF {held} {q(lock_path)} 2>/dev/null; then rm -f {q(lock_path)}; fi")


def arm(module, state_dir: str, owner, ttl: int, kexec: str, kernel: str, lock_path: str) -> dict:
    """Write ``staged`` for the run in ``owner`` and start its expiry; StageError (nothing left) where it cannot."""
    run = check_run(owner)
    if not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
        raise StageError(f"stage_ttl is {ttl!r}: seconds, from 1 to {MAX_TTL}")
    expires = int(time.time()) + ttl
    line = f"{run} {secrets.token_hex(8)} {expires} {request_of(owner) or '-'}"
    files.write_atomic(_path(state_dir, STAGED), (line + "\n").encode(), mode=0o600, dir_mode=0o700)
    job = expiry_job(line, run, state_dir, kexec, kernel, lock_path)
    try:
        argv = host.detach(module, job, "end a staged load", delay=ttl)
    except host.DetachError as exc:
        disarm(state_dir)
        raise StageError(f"the staged load's expiry could not be started: {exc}") from exc
    return {"run": run, "ttl": ttl, "expires_at": expires, "argv": argv, "line": line}


def _line(path: str, fields: int) -> list | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            parts = fh.read(4096).split("\n", 1)[0].split(" ", fields - 1)
    except OSError:
        return None
    return parts if len(parts) == fields else None


def read(state_dir: str) -> dict:
    """What kho_facts says of staging: the staged load (run, expires_at) and a note of one that expired, or None."""
    staged, note = _line(_path(state_dir, STAGED), 4), _line(_path(state_dir, EXPIRED), 4)
    return {"staged": {"run": staged[0], "expires_at": int(staged[2]) if staged[2].isdigit() else None}
            if staged else None,
            "expired": {"run": note[0], "at": int(note[1]) if note[1].isdigit() else None, "state": note[2],
                        "kernel": note[3]} if note else None}


def mine(state_dir: str, owner, live: bool = True) -> bool:
    """The staged load is this run's (its expiry has not fired: it removes the line) and, with ``live``, its time has
    not run out either (the expiry is not about to fire)."""
    staged = read(state_dir)["staged"]
    run = run_of(owner)
    return bool(staged and run and staged["run"] == run and (not live or (staged["expires_at"] or 0) > time.time() + 1))


def take_up(state_dir: str, owner, lock_path: str) -> bool:
    """The switch's part, under the lock's flock (the expiry takes it too): StageError where the staging run no
    longer holds the handover lock (its time ran out, or it was released); else whether the staged load is this
    run's, and if so its expiry removed, so that nothing unloads it between here and the jump."""
    run = check_run(owner)
    with lock._guard(lock_path):  # pylint: disable=protected-access  # the one flock of the lock's file
        holder = lock.read(lock_path)
        if not holder or holder.get("run") != run:
            note = read(state_dir)["expired"]
            why = (f"its staged load expired at {note['at']} and was {note['state']}" if note and note["run"] == run
                   else f"the lock is held by {holder.get('run')!r}" if holder else "the lock is not held")
            raise StageError(f"the run that staged this host no longer holds its handover lock ({why}): stage again")
        if not mine(state_dir, owner):
            return False
        return disarm(state_dir)


def disarm(state_dir: str) -> bool:
    """Remove ``staged`` (its expiry and its switch then do nothing) and the switch's files; whether it was there."""
    for name in (SWITCH_SH, SWITCH_ANSWER):
        try:
            os.unlink(_path(state_dir, name))
        except FileNotFoundError:
            pass
    try:
        os.unlink(_path(state_dir, STAGED))
        return True
    except FileNotFoundError:
        return False


def write_switch(state_dir: str, script: str, answer: dict) -> str:
    """The switch's files (switch_script's text, the answer it gives); returns the script's path."""
    text = json.dumps(answer, sort_keys=True, default=str).encode()
    if len(text) > ANSWER_BYTES:
        raise StageError(f"the stage's answer is {len(text)} bytes, more than the switch reads back ({ANSWER_BYTES})")
    files.write_atomic(_path(state_dir, SWITCH_ANSWER), text, mode=0o600, dir_mode=0o700)
    files.write_atomic(_path(state_dir, SWITCH_SH), script.encode(), mode=0o700, dir_mode=0o700)
    return _path(state_dir, SWITCH_SH)


def switch_script(line: str, state_dir: str, lock_path: str, loaded: str, status: str, kexec: str, job: str,
                  boot_id: str = paths.BOOT_ID) -> str:
    """sh: the staged switch, run by the controller as ``sh switch.sh JUMP_RUN OLD_BOOT RUN REQUEST`` (switch_command).

    Under the lock's flock (the expiry takes it too): where anything differs from the stage this script was written
    for (the run and the request, ``line`` still staged and not about to expire, the boot, the lock held by the run,
    an image loaded) it changes nothing and says ``fallback WHY``: the controller then runs the module, which says
    or does what the case needs.  Else it takes the load up (removes ``staged``), writes the jump status (JUMP_RUN,
    its own pid and start, ``load started``), prints the answer and queues ``job`` (jump_job, reading the pid and the
    status prefix from its $1 and $2), detached as host.detach does; a failure from the take-up on unloads the image
    and says ``failed WHY unloaded|unload-failed``.  Only checked values go in, each quoted; the arguments are
    checked by pattern before they are compared."""
    q = shlex.quote
    run, _nonce, expires, request = line.split(" ")
    stage, record, answer = (q(_path(state_dir, n)) for n in (STAGED, "loaded.json", SWITCH_ANSWER))
    new, held = q(status + ".new"), q(f'"run": "{run}"')

    def fallback(why):
        return f"{{ echo '{MARK} fallback {why}'; exit 0; }}"
    return "\n".join([
        "# kexec.kho's staged switch (module_utils/_kho/stage.py), written by the stage of one run: see there.",
        'jr=$1 ob=$2 or=$3 rq=$4 st=',
        f'case "$jr" in ""|*[!A-Za-z0-9._:-]*) {fallback("arguments")};; esac',
        f'case "$ob$or$rq" in ""|*[!A-Za-z0-9._:-]*) {fallback("arguments")};; esac',
        f"(: >>{q(lock_path + '.guard')}) 2>/dev/null || {fallback('guard')}",
        f"exec 9>>{q(lock_path + '.guard')}",
        "command -v flock >/dev/null 2>&1 && flock 9",
        f'[ "$or" = {q(run)} ] && [ "$rq" = {q(request)} ] || {fallback("request")}',
        f'[ "$(head -n 1 {stage} 2>/dev/null)" = {q(line)} ] || {fallback("not-staged")}',
        f'[ "$(date +%s)" -lt {int(expires) - 1} ] || {fallback("expiring")}',
        f'[ "$(cat {q(boot_id)} 2>/dev/null)" = "$ob" ] || {fallback("boot")}',
        f"grep -qF {held} {q(lock_path)} 2>/dev/null || {fallback('lock')}",
        f"grep -qx 1 {q(loaded)} 2>/dev/null || {fallback('not-loaded')}",
        # From here this run changed something: a failure unloads the image and says so.
        f"undo() {{ if {q(kexec)} -u >/dev/null 2>&1; then s={UNLOADED} d=-; rm -f {record}; else s={UNLOAD_FAILED} d=load; fi",
        f"  [ -n \"$st\" ] && printf '%s %s %s %s failed\\n' \"$jr\" $$ \"$st\" $d > {new} && mv -f {new} {q(status)}",
        f'  echo "{MARK} failed $1 $s"; exit 0; }}',
        "st=$(sed 's/.*) //' /proc/$$/stat | cut -d ' ' -f 20)",  # field 22, the start time, as jump_status reads it
        'case "$st" in ""|*[!0-9]*) st=; undo start;; esac',
        'prefix="$jr $$ $st load"',
        # The load is this run's from here (the status says so first: a run cut off here is unloaded by its rollback).
        f"printf '%s {paths.JUMP_RUNNING}\\n' \"$prefix\" > {new} && mv -f {new} {q(status)} || undo status",
        f"rm -f {stage} || undo take-up",  # taken up: the expiry has nothing left to do
        f"printf '%s {paths.JUMP_STARTED}\\n' \"$prefix\" > {new} && mv -f {new} {q(status)} || undo status",
        f"echo '{MARK}-ANSWER'; head -c {ANSWER_BYTES} {answer} || undo answer; echo",
        f"job={q(job)}",
        f"if [ -d {q(paths.SYSTEMD_RUNNING)} ] && command -v systemd-run >/dev/null 2>&1; then",
        '  systemd-run --quiet --collect /bin/sh -c "$job" sh "$$" "$prefix" 9>&- || undo queue',
        "else",
        '  setsid -f /bin/sh -c "exec </dev/null >/dev/null 2>&1; $job" sh "$$" "$prefix" 9>&- || undo queue',
        "fi",
        f"echo '{MARK} queued'",
        ""])


def switch_command(state_dir: str, jump_run: str, boot_id: str, owner) -> str:
    """The controller's one command for the switch: the stage's script with this switch's values, or ``fallback``
    where no script is there (an older stage, or none)."""
    q = shlex.quote
    script = q(_path(state_dir, SWITCH_SH))
    args = " ".join(q(a) for a in (jump_run, boot_id, run_of(owner) or "", request_of(owner) or ""))
    return f"if [ -r {script} ]; then exec /bin/sh {script} {args}; fi; echo '{MARK} fallback no-script'"


def switch_answer(stdout: str) -> dict:
    """What the switch said (switch_script), bounded: ``word`` (queued, fallback, failed, or None where it said
    nothing of ours), ``why``, ``state`` (failed's: unloaded, unload-failed) and ``answer`` (the stage's, a dict, or
    None where it is not readable)."""
    text = str(stdout or "")[-(ANSWER_BYTES + 4096):]
    lines = [line.rstrip("\r") for line in text.rstrip("\r\n").split("\n")]  # CR LF where a pty carried it
    last = lines[-1].split(" ") if lines else []
    if not last or last[0] != MARK or len(last) < 2:
        return {"word": None, "why": None, "state": None, "answer": None}
    answer = None
    if last[1] == "queued" and f"{MARK}-ANSWER" in lines:
        start = lines.index(f"{MARK}-ANSWER") + 1
        try:
            answer = json.loads("\n".join(lines[start:-1]))
        except (ValueError, RecursionError):  # the host's text: a depth bomb is no answer either
            answer = None
    return {"word": last[1], "why": last[2] if len(last) > 2 else None, "state": last[3] if len(last) > 3 else None,
            "answer": answer if isinstance(answer, dict) else None}
