# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting for a host to come back on a new boot.  Not a public API.

Kept apart from the action plugin so that the timing logic is tested without a host.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections import namedtuple
from collections.abc import Mapping

from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status, paths, self_return
from ansible_collections.kexec.kho.plugins.plugin_utils import _return


BOOT_ID = jump_status.BOOT_ID


class AttemptTimeout(Exception):
    """A remote command that did not finish within its bound (its thread was abandoned)."""


def bounded(fn, seconds: float, what: str):
    """fn() with a hard deadline: a connection plugin bounds its connect, not a half-open session.

    The call runs in a daemon thread; past ``seconds`` it is abandoned (the caller resets the
    connection) and AttemptTimeout is raised.  Whatever fn raises is raised here.
    """
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # pylint: disable=broad-except  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"kexec.kho {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AttemptTimeout(f"{what}: no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def controller_boot_id(path: str = paths.BOOT_ID) -> str | None:
    """The controller's own boot id, where it has one (Linux)."""
    try:
        with open(path, encoding="ascii") as f:
            return boot_id(f.read(64))
    except (OSError, ValueError):
        return None


class NotBack(Exception):
    """The host did not answer on a new boot id in time.

    ``status``: this run's jump status as the old boot last showed it (None: none of this run's was seen);
    ``running``: the run on the host was last seen alive and had not queued the jump (so it may still)."""

    def __init__(self, msg: str, old_answers: int = 0, seen_down: bool = True, status=None, running: bool = False):
        super().__init__(msg)
        self.old_answers, self.seen_down, self.status, self.running = old_answers, seen_down, status, running


class NotJumped(NotBack):
    """The old boot says no jump happened (or will), or it still answers, never seen gone, well after the trigger."""


def boot_id(text) -> str | None:
    """A well-formed boot id from a command's output, or None (an error message is never one)."""
    value = (text or "").strip()
    return value if BOOT_ID.match(value) else None


def ssh_banner(host: str, port: int, timeout: float) -> bool:
    """An SSH server answers on host:port (the cheap first sign that a host is back)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def jump_failure(state: str) -> str | None:
    """Why the jump did not happen, from the state the queued jump wrote; None while it may still happen."""
    if state.startswith(paths.JUMP_EXIT + " "):
        return f"the jump command returned ({state}) and the host stayed on its old boot"
    if state == paths.JUMP_NOT_LOADED:
        return "no kexec image was loaded any more when the jump was due (something unloaded it): nothing was jumped"
    return None


def run_failure(status, process: str, ended: bool) -> str | None:
    """Why this run on the host will never queue the jump, from its status (None: it wrote none this boot) and
    whether its process is alive; ``ended``: the module answered (so it has exited).  None while it may still."""
    if status is None:
        return ("the run on the host ended without writing its jump status: it changed nothing and queued no jump"
                if ended else None)  # else it may not have started yet: not_jumped_after decides
    if status.state == paths.JUMP_FAILED:
        return f"the run on the host (pid {status.pid}) failed before it queued the jump"
    if status.state == paths.JUMP_RUNNING and (process == paths.RUN_GONE or ended):
        return f"the run on the host (pid {status.pid}) ended before it queued the jump"
    return jump_failure(status.state)


def still_running(status, process: str, ended: bool) -> bool:
    """The run on the host is not known to be gone and has not queued the jump: it may still queue it."""
    return (status is not None and status.state == paths.JUMP_RUNNING and not ended
            and process != paths.RUN_GONE)


HANDOVER_STATES = {
    "in": None,
    "no-in": "the host came back on a new boot but received no handover data: the jump did not carry KHO "
             "(an image loaded without -s, or a cold boot after a panic)",
    "no-kho": "the host came back on a new boot but shows no {kho} directory: debugfs is not mounted there, "
              "or the new kernel has no KHO; mount it at boot or set verify_handover: false",
}


def handover_check_command(debugfs_root: str) -> str:
    """One command printing in / no-in / no-kho: what the new kernel shows under debugfs."""
    kho = shlex.quote(debugfs_root.rstrip("/") + "/" + paths.KHO)
    return f"if [ -d {kho}/in ]; then echo in; elif [ -d {kho} ]; then echo no-in; else echo no-kho; fi"


# Whether the process the status names (its pid, with that start time: field 22 of /proc/PID/stat, the 20th after
# the command name) is alive; the status's words were split into $1.. by the line before.
PROCESS_CHECK = (
    f"p={paths.RUN_UNKNOWN}; "
    'if [ $# -ge 5 ] && [ "$2" -gt 0 ] 2>/dev/null && [ "$3" -ge 0 ] 2>/dev/null; then '
    f'start=$3; t=$(cat "{paths.PROCFS}/$2/stat" 2>/dev/null); p={paths.RUN_GONE}; '
    f'if [ -n "$t" ]; then t=${{t##*) }}; set -- $t; [ "${{20}}" = "$start" ] && p={paths.RUN_ALIVE}; fi; '
    "fi; set +f; echo $p")


AFTER = "kho-after"  # the line before what a poll also read on a boot other than the old one (``after``)


def arrival_command(debugfs_root: str | None, after: str | None = None, old_id: str | None = None) -> str:
    """What every poll runs: the boot id, the jump status, whether the run it names is alive, and (given a debugfs
    root) the handover check.  At most MAX_LINE bytes of the status are read.  With ``after`` (sh text of the
    collection's own, _evidence.command) and the old boot id, also that, behind AFTER, on any other boot only: the
    first answer of the new boot carries it, and no poll of the old one pays for it.

    One round trip on the first connection to the new boot: no second command before the task returns (but
    test_command and facts_after's read, each where asked for, and where not folded in here).
    """
    old = boot_id(old_id)
    tail = (f'; if [ "$(cat {paths.BOOT_ID})" != {shlex.quote(old)} ]; then echo {AFTER}; {after}; fi'
            if after and old else "")
    status = (f"s=$(head -c {jump_status.MAX_LINE} {shlex.quote(paths.JUMP_STATUS)} 2>/dev/null | head -n 1); "
              f'echo "${{s:-{paths.JUMP_NONE}}}"; set -f; set -- $s')
    check = handover_check_command(debugfs_root) if debugfs_root else "echo unchecked"
    note = (f"n=$(head -c {NOTE_LINE} {shlex.quote(paths.RETURN_NOTE)} 2>/dev/null | head -n 1); "
            'echo "${n:--}"')  # the host's own return, where it made one (self_return's note)
    return f"cat {paths.BOOT_ID}; {status}; {PROCESS_CHECK}; {check}; {note}{tail}"


NOTE_LINE = 512  # bytes of the host's note read (self_return.read_note reads as much)
Arrival = namedtuple("Arrival", "boot_id status process check note after")
MAX_ARRIVAL = 4096  # characters of a poll's answer read: five short lines
PROCESS_WORDS = (paths.RUN_ALIVE, paths.RUN_GONE, paths.RUN_UNKNOWN)


def parse_arrival(text) -> Arrival:
    """From arrival_command's output: the boot id (or None), the jump status (jump_status.Status, or None where
    there is none of the run's form), the process (alive, gone or unknown), the handover check, and the host's note
    of a return it made by itself (self_return.parse_note: None where there is none of its form); and what it read
    behind AFTER (arrival_command's ``after``), else None."""
    head, marked, after = str(text or "").replace("\r\n", "\n").partition(f"\n{AFTER}\n")
    lines = head[:MAX_ARRIVAL].strip().splitlines()
    lines += [""] * (5 - len(lines))
    process = lines[2].strip()
    return Arrival(boot_id(lines[0]), jump_status.parse(lines[1]),
                   process if process in PROCESS_WORDS else paths.RUN_UNKNOWN, lines[3].strip(),
                   self_return.parse_note(lines[4]), after if marked else None)


def handover_failure(output: str, debugfs_root: str) -> str | None:
    """None when the check printed 'in'; otherwise why the handover is not shown as received."""
    state = (output or "").strip().splitlines()[-1:] or [""]
    if state[0] not in HANDOVER_STATES:
        return f"the handover check printed {output!r}, not one of {sorted(HANDOVER_STATES)}"
    msg = HANDOVER_STATES[state[0]]
    return msg and msg.format(kho=debugfs_root.rstrip("/") + "/" + paths.KHO)


GONE_AFTER = 3  # failed probes or reads in a row that make the old kernel gone: one alone may be a busy network
BACKOFF, MAX_PAUSE = 1.5, 2.0  # the pause between polls grows by half each round, up to 2 s (or the interval)


# The states of a jump as the wait sees them (progress lines; the phases of kho_kexec's return are spans between them).
EVENT_SENT = "trigger sent"
EVENT_GONE = "old kernel gone"
EVENT_BANNER = "SSH banner back"
EVENT_BACK = "new boot answered"


class Wait:
    """Poll until read() shows a well-formed boot id other than old_id: one wait, as a small state machine.

    ``read`` runs arrival_command on the host and returns its output.  ``probe`` (optional) is a
    cheap check run first on each round, such as an SSH banner read, so that a host that is back
    is seen within ``interval`` and not after a back-off.  With a probe, polling starts once the
    old kernel has stopped answering it (or after ``wait_gone`` seconds); while it still answers,
    one real read every ``check_every`` seconds looks for a jump that failed on the old boot.
    Every failure of read counts as 'not yet'; GONE_AFTER failures of the probe or the read in a row, with no answer
    between them, are the old kernel gone (since the first of them): one alone is no sign (a slow banner on a busy
    host or network; the lab saw one turn a jump its old boot said had failed into an unknown).  Once gone, the pause
    between polls grows by half each round up to MAX_PAUSE: a connection attempt made while the host is down is
    not always lost (a NAT, or QEMU's user network, keeps retrying it), and a burst of them reaching sshd as it
    starts trips its MaxStartups and drops the very login that was waited for.
    Only this run's jump status counts (``run_id``: the one the action gave the module); ``ended``: the module
    answered, so its process has exited.  run() raises NotJumped when the old boot says the jump failed, or that this
    run failed or ended before it queued it (run_failure), or still answers ``not_jumped_after`` seconds in, never
    seen gone, unless this run is still running there (it may still queue the jump); NotBack after ``timeout``.
    Each carries the old boot's answers and this run's last status.  ``on_event(state, seconds)`` is told each state
    as it is seen (progress).  Without ``old_id`` (the load's answer was lost), the old boot is the one with this
    run's jump status (learn_old).
    """

    def __init__(self, read, old_id: str | None, timeout: float, interval: float = 0.25, probe=None,
                 wait_gone: float = 30.0, not_jumped_after: float | None = None, check_every: float = 5.0,
                 clock=time.monotonic, sleep=time.sleep, on_event=None, run_id: str | None = None, ended: bool = False):
        self.read, self.old_id, self.timeout, self.interval, self.probe = read, old_id, timeout, interval, probe
        self.wait_gone, self.not_jumped_after, self.check_every = wait_gone, not_jumped_after, check_every
        self.clock, self.sleep, self.on_event = clock, sleep, on_event
        self.run_id, self.ended = run_id, ended
        self.start = clock()
        self.attempts, self.old_answers = 0, 0
        self.first_answer = self.gone = self.last_error = self.status = self.first_miss = None
        self.seen_down = self.running = False
        self.misses = 0

    def elapsed(self) -> float:
        return self.clock() - self.start

    def tell(self, state: str, at: float | None = None) -> None:
        if self.on_event is not None:
            self.on_event(state, round(self.elapsed() if at is None else at, 1))

    def down(self) -> None:
        """The old kernel stopped answering (first time only), since the first miss of the run of them."""
        if not self.seen_down:
            self.seen_down, self.gone = True, self.first_miss if self.first_miss is not None else self.elapsed()
            self.tell(EVENT_GONE, self.gone)

    def miss(self) -> None:
        """A failed probe or read: GONE_AFTER of them in a row are the old kernel gone."""
        if self.seen_down:
            return
        self.misses += 1
        if self.first_miss is None:
            self.first_miss = self.elapsed()
        if self.misses >= GONE_AFTER:
            self.down()

    def answered(self) -> None:
        """The old kernel answered (its banner, or a read of its boot): the misses before were no outage."""
        if not self.seen_down:
            self.misses, self.first_miss = 0, None

    def attempt(self) -> dict | None:
        """One real read: the arrival on a new boot, None while not yet; raises NotJumped from the old boot."""
        self.attempts += 1
        began = self.elapsed()
        try:
            new, status, process, check, note, after = parse_arrival(self.read())
        except Exception as exc:  # pylint: disable=broad-except  # every failure is 'not yet'
            self.last_error = exc
            self.miss()
            return None
        mine = status if status is not None and status.run == self.run_id else None  # another run's is none of ours
        if new and self.old_id is None:
            self.learn_old(new, mine)
        if new and new != self.old_id and returning_from(note, self.run_id, new):
            return None  # the new kernel, on its way back by itself: the boot after it is the arrival
        if new and new != self.old_id:
            if self.first_miss is not None and not self.seen_down:  # back after fewer misses than GONE_AFTER
                self.down()
                if self.probe is not None and self.first_answer is None:
                    self.first_answer = began
            # Without a probe, the host's first answer is the attempt that read the new boot id.
            first = self.first_answer if self.probe is not None else began
            self.tell(EVENT_BACK)
            return {"boot_id": new, "attempts": self.attempts, "waited": self.elapsed(), "gone": self.gone,
                    "first_answer": first, "old_answers": self.old_answers, "check": check, "old_id": self.old_id,
                    "note": note, "after": after}
        if new and new == self.old_id:  # an answer without a boot id is no answer from the old boot
            self.old_answers += 1
            self.answered()
            self.check_still_old(mine, process)
        return None

    def learn_old(self, answered: str, mine) -> None:
        """Without the old boot id (the load's answer was lost): a boot with this run's jump status is the old one.
        The first answer from a boot without one is the new boot or an old one whose run did not write it (yet):
        unknown, unless the run has ended (it answered): then it never wrote one, changed nothing, queued nothing, and
        the boot that answers is the one it ran on (check_still_old says so)."""
        if mine is None and not self.ended:
            raise NotBack(f"the host answers on boot {answered} without this run's jump status, and the boot before "
                          "the jump is unknown (the load's answer was lost): whether it jumped is unknown",
                          self.old_answers, True)
        self.old_id = answered

    def check_still_old(self, mine, process: str) -> None:
        """The old boot answered: a jump that failed there, a run that will not queue it, or one never seen
        leaving while the run is not running any more, ends the wait."""
        if self.seen_down:
            return
        self.status, self.running = mine, still_running(mine, process, self.ended)
        why = run_failure(mine, process, self.ended)
        if not why and not self.running and self.not_jumped_after is not None \
                and self.elapsed() >= self.not_jumped_after:
            why = (f"the host still answers on its old boot {self.old_id} {self.elapsed():.0f} s after the trigger "
                   "and was never seen gone")
        if why:
            raise NotJumped(f"the jump did not happen: {why}", self.old_answers, False, mine)

    def watch_old(self) -> dict | None:
        """With a probe: until the old kernel stops answering it, one real read every check_every seconds."""
        last_check = self.start
        while self.probe is not None and self.elapsed() < min(self.wait_gone, self.timeout):
            if not self.probe():
                self.miss()
                if self.seen_down:
                    return None
            else:
                self.answered()
            if self.clock() - last_check >= self.check_every:
                last_check = self.clock()
                back = self.attempt()
                if back or self.seen_down:
                    return back
            self.sleep(self.interval)
        return None

    def poll(self) -> dict | None:
        """Until the timeout: a read whenever the probe (if any) answers, with a growing pause."""
        pause = self.interval
        while self.elapsed() < self.timeout:
            answering = self.probe is None or self.probe()
            if not answering:
                self.miss()
            else:
                if self.probe is not None and self.seen_down and self.first_answer is None:  # back after gone
                    self.first_answer = self.elapsed()
                    self.tell(EVENT_BANNER)
                back = self.attempt()
                if back:
                    return back
            self.sleep(pause)
            pause = min(pause * BACKOFF, max(self.interval, MAX_PAUSE))
        return None

    def run(self) -> dict:
        back = self.watch_old() or self.poll()
        if back:
            return back
        detail = f"; last error: {self.last_error}" if self.last_error else ""
        if self.running and not self.seen_down:
            detail += (f"; the run on the host (pid {self.status.pid}) was still running and had not queued the jump: "
                       "whether it jumps is unknown")
        raise NotBack(f"the host did not answer on a new boot id within {self.timeout:.0f} s "
                      f"({self.attempts} attempts{detail})", self.old_answers, self.seen_down, self.status,
                      self.running and not self.seen_down)


def wait_for_new_boot(read, old_id: str | None, timeout: float, interval: float = 0.25, probe=None, **kw) -> dict:
    """Wait(...).run(): the arrival on a new boot (see Wait)."""
    return Wait(read, old_id, timeout, interval, probe, **kw).run()


def returning_from(note, run_id: str | None, boot: str) -> bool:
    """This run's host says (its note) that it is leaving ``boot`` by its own return, not yet gone."""
    return (isinstance(note, dict) and run_id is not None and note.get("run_id") == run_id
            and note.get("state") == self_return.STATES[0] and note.get("new_boot_id") == boot)


def after_not_back(exc: NotBack) -> bool | None:
    """Whether the host jumped, from a wait that ended without a new boot: None (unknown: it was seen gone, the old
    boot never answered, or this run was still running there, so it may have jumped or may still), False (it still
    answers on its old boot)."""
    return None if exc.seen_down or not exc.old_answers or exc.running else False


def left_by_run(load: dict, status) -> dict:
    """What this run changed on a host that did not jump and has not undone, for the rollback: from the module's
    answer where it came, else from this run's jump status on the old boot (the module writes each change there
    before its next step), else nothing (a run that never wrote its status changed nothing).  ``source`` says which."""
    if load.get("triggered") is not None:
        return {"loaded_here": bool(load.get("loaded_here")), "finalized_here": bool(load.get("finalized_here")),
                "source": "answer"}
    if status is None:
        return {"loaded_here": False, "finalized_here": False, "source": "none"}
    return {"loaded_here": paths.DONE_LOAD in status.done, "finalized_here": paths.DONE_FINALIZE in status.done,
            "source": "status"}


WHOSE = {"answer": "this run loaded",
         "status": "this run loaded (the load's answer was lost; its jump status on the host says so)"}
NOT_UNLOADED = {"answer": "the image was loaded before this run and is left as it was",
                "status": "this run's jump status says it loaded no image: none was unloaded",
                "none": "the run on the host never wrote its jump status, so it changed nothing: nothing was unloaded"}


def unload_plan(left: dict) -> str | None:
    """Whose image a rollback unloads (a host still on its old boot), from left_by_run: this run's (as its answer
    or its jump status says), or None (none of this run's: an image loaded before it is left as it was)."""
    return WHOSE[left["source"]] if left["loaded_here"] else None


def unload_outcome(whose: str | None, res: dict | None, source: str = "answer") -> tuple:
    """(what was done, unloaded) from unload_plan's answer and the unload's result (None where none ran)."""
    if whose is None:
        return NOT_UNLOADED[source], False
    if res.get("failed"):
        return f"unloading the image {whose} failed: {res.get('msg')}", False
    if res.get("changed"):
        return f"the image {whose} was unloaded", True
    return "no image was loaded any more", False


# What the handover role's back-out undid, in its words (the rescue's registered results, by step).
BACKED_OUT = (("finalize", "the finalize this run made aborted"), ("load", "the image this run loaded unloaded"),
              ("return", "the host's own return disarmed"), ("lock", "its handover lock released"))


def backed_out(undo: dict, jump: dict | None = None, load: dict | None = None) -> dict:
    """The role's back-out of a host that did not jump, from fields: ``undone``, what it undid in words (``undo``: the
    registered results of its steps, by BACKED_OUT's names; ``jump``: kho_kexec's result, whose own rollback may have
    unloaded), and ``changed_nothing``: nothing of the host's was changed (the run's own lock, taken and released,
    aside) - no finalize, load or return undone by the back-out, none by the jump's own rollback (``unloaded``,
    ``self_return.disarmed``), none by the load's run itself (``load``: its answer's ``undone``), and no boot-loader
    change by the enable step (``undo['enable']``, kept: kho=on stays)."""
    undo = {k: v for k, v in (undo or {}).items() if isinstance(v, Mapping)}
    jump, load = (x if isinstance(x, Mapping) else {} for x in (jump, load))
    done = {k: bool(undo.get(k, {}).get("changed")) for k, _w in BACKED_OUT}
    done["load"] = done["load"] or bool(jump.get("unloaded"))
    unload_failed = bool(undo.get("load", {}).get("failed"))
    words = [w for k, w in BACKED_OUT[:2] if done[k]]
    words += [f"unloading the image failed: {undo['load'].get('msg') or ''}"] if unload_failed else []
    words += [w for k, w in BACKED_OUT[2:] if done[k]]
    disarmed = (jump.get("self_return") or {}).get("disarmed") if isinstance(jump.get("self_return"), Mapping) else None
    kept = bool(undo.get("enable", {}).get("changed"))  # the enable step's boot-loader change (kho=on), kept
    changed = (done["finalize"] or done["load"] or unload_failed or done["return"] or bool(disarmed)
               or bool(load.get("undone")) or kept)
    return {"undone": words, "changed_nothing": not changed}


def verdict(back: dict, downtime: float, test: dict, root: str | None) -> dict:
    """What a jump that came back on a new boot amounts to: the fields of kho_kexec's return.

    ``test`` is test_command's result ({"rc": 0} where none ran); ``root`` the debugfs root where the handover is
    checked (None: not checked).  Decided from fields only: the test's rc and the arrival's handover check.
    """
    if test["rc"]:
        return {"failed": True, "failed_check": _return.TEST_COMMAND,
                "msg": f"the host is back on a new boot, but the test command failed: {test.get('stderr')}"}
    out = {"handover_received": None, "msg": f"back on boot {back['boot_id']} after {downtime:.1f} s"}
    if root:  # answered by the same command that read the new boot id: a shell test, not a kho_facts run
        why = handover_failure(back["check"], root)
        out["handover_received"] = why is None
        if why:
            out.update(failed=True, failed_check=_return.VERIFICATION, msg=why)
    return out


# The wait's phases, the names kho_kexec returns in phases and the role and the report use in timings.
WAIT_PHASES = ("to_gone", "gone_to_banner", "banner_to_answer", "to_answer")


def wait_phases(back: dict, watched: bool) -> dict:
    """The wait split at what was seen: the old kernel gone, an SSH banner back, the new boot id read."""
    def span(a, b):
        return round(b - a, 2) if a is not None and b is not None else None
    banner = back["first_answer"] if watched else None
    spans = (span(0.0, back["gone"]) if watched else None, span(back["gone"], banner), span(banner, back["waited"]),
             round(back["waited"], 2))
    return dict(zip(WAIT_PHASES, spans))
