# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The jump status file: who runs state=executed on the host, what it changed, how far it got.  Not a public API.

One line, ``RUN PID START DONE STATE`` (paths.py names the words): the action's run id, the pid of the module's
process and its start time (field 22 of /proc/PID/stat, so that a reused pid is never taken for it), what the run
changed and has not undone (``finalize``, ``load``, ``return``, joined by commas, or ``-``), then the state.  The module writes it
before it changes anything and again after each change; the queued jump writes its failures with the same prefix.
The controller's polls read it (and whether that process is alive) after a lost answer: plugin_utils/_jump.py.
"""

from __future__ import annotations

import os
import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import files, paths

RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
BOOT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # /proc/.../random/boot_id
MAX_LINE = 256  # a status line is far shorter; the polls read at most this much of the file
DONE_WORDS = (paths.DONE_FINALIZE, paths.DONE_LOAD, paths.DONE_RETURN)
STATES = re.compile(rf"^(?:{paths.JUMP_RUNNING}|{paths.JUMP_FAILED}|{paths.JUMP_STARTED}|{paths.JUMP_NOT_LOADED}"
                    rf"|{paths.JUMP_EXIT} [0-9]{{1,3}})$")


class StatusError(Exception):
    """The status cannot be written (before any change, the run refuses)."""


def check_run_id(run: str | None) -> str:
    if not isinstance(run, str) or not RUN_ID.match(run):
        raise StatusError(f"run_id is {run!r}; state=executed needs the action's run id (1 to 64 of A-Z a-z 0-9 . _ : -),"
                          " which the kho_kexec action sets")
    return run


def process_start(pid: int, procfs: str = paths.PROCFS) -> str | None:
    """Field 22 of /proc/PID/stat (the start time in clock ticks since boot), or None where the process is gone."""
    try:
        with open(os.path.join(procfs, str(int(pid)), "stat"), encoding="ascii", errors="replace") as fh:
            text = fh.read(4096)
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name (field 2) may hold spaces and parentheses
    return fields[19] if len(fields) > 19 and fields[19].isdigit() else None


class Status:
    """One status line, parsed or to be written."""

    def __init__(self, run: str, pid: int, start: str, done: tuple = (), state: str = paths.JUMP_RUNNING):
        self.run, self.pid, self.start, self.done, self.state = run, int(pid), start, tuple(done), state

    def prefix(self) -> str:
        """The line up to its state: what the queued jump writes its own states after."""
        return f"{self.run} {self.pid} {self.start} {','.join(self.done) or '-'}"

    def line(self) -> str:
        return f"{self.prefix()} {self.state}\n"

    def __eq__(self, other):
        return isinstance(other, Status) and self.line() == other.line()

    def __repr__(self):
        return f"Status({self.line().strip()!r})"


def parse(text) -> Status | None:
    """The status from a poll's line (or the file's text), None for anything else: no status of a run of this form."""
    words = str(text or "")[:MAX_LINE].strip().split(" ", 4)
    if len(words) != 5 or not RUN_ID.match(words[0]) or not words[1].isdigit() or not words[2].isdigit():
        return None
    done = () if words[3] == "-" else tuple(words[3].split(","))
    if not set(done) <= set(DONE_WORDS) or not STATES.match(words[4]):
        return None
    return Status(words[0], int(words[1]), words[2], done, words[4])


class Writer:
    """The module's side: the status of this process's run, rewritten (atomically) at each step."""

    def __init__(self, path: str, run: str, pid: int | None = None, procfs: str = paths.PROCFS):
        self.path, self.run = path, check_run_id(run)
        self.pid = os.getpid() if pid is None else pid
        self.start = process_start(self.pid, procfs)
        if self.start is None:
            raise StatusError(f"cannot read the start time of this process in {procfs}/{self.pid}/stat")
        self.status = Status(self.run, self.pid, self.start)

    def write(self, state: str, done: tuple) -> Status:
        status = Status(self.run, self.pid, self.start, done, state)
        try:
            files.write_atomic(self.path, status.line().encode("ascii"), mode=0o644)
        except OSError as exc:
            hint = " (run the task with become: true)" if isinstance(exc, PermissionError) else ""
            raise StatusError(f"cannot write the jump status {self.path}: {exc}{hint}") from exc
        self.status = status
        return status
