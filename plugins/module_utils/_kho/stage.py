# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A staged load (kho_kexec stage_ttl, issue 38): the image loaded while the host still serves, for the run that
holds the handover lock, and unloaded by the host itself when its time to live passes.  Not a public API.

On disk, under the state directory beside the load's record:

- ``staged``: one line, ``RUN NONCE EXPIRES``, written after the load and removed with its record (an unload, a new
  load) and by the switch that takes the load up, before it queues the jump;
- ``staged-expired``: one line, ``RUN AT STATE KERNEL``, the host's word that it ended a staged load whose time ran
  out (STATE: ``unloaded``, or ``unload-failed``), for a later run to say.

The expiry is a detached sh job (a systemd timer where systemd runs, else a sleeping process in its own session),
built only from checked values, each quoted.  When it fires it acts only where ``staged`` still holds its exact
line: a switch, an unload, a new load or another run leave it nothing to do.  It then unloads, writes the note and
releases the handover lock where the staging run still holds it, all under the lock's flock.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import time

from ansible_collections.kexec.kho.plugins.module_utils._kho import files, host, lock

STAGED, EXPIRED = "staged", "staged-expired"  # under the state directory
RUN = re.compile(r"[A-Za-z0-9._:-]{1,200}")  # a run id, as _owner.this_run makes them (host:pid:start:nonce)
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
    line = f"{run} {secrets.token_hex(8)} {expires}"
    files.write_atomic(_path(state_dir, STAGED), (line + "\n").encode(), mode=0o600, dir_mode=0o700)
    job = expiry_job(line, run, state_dir, kexec, kernel, lock_path)
    try:
        argv = host.detach(module, job, "end a staged load", delay=ttl)
    except host.DetachError as exc:
        disarm(state_dir)
        raise StageError(f"the staged load's expiry could not be started: {exc}") from exc
    return {"run": run, "ttl": ttl, "expires_at": expires, "argv": argv}


def _line(path: str, fields: int) -> list | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            parts = fh.read(4096).split("\n", 1)[0].split(" ", fields - 1)
    except OSError:
        return None
    return parts if len(parts) == fields else None


def read(state_dir: str) -> dict:
    """What kho_facts says of staging: the staged load (run, expires_at) and a note of one that expired, or None."""
    staged, note = _line(_path(state_dir, STAGED), 3), _line(_path(state_dir, EXPIRED), 4)
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
    """Remove ``staged`` (its expiry then does nothing); whether it was there."""
    try:
        os.unlink(_path(state_dir, STAGED))
        return True
    except FileNotFoundError:
        return False
