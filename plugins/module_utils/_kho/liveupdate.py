# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live update (LUO): what a host preserves across the jump, and which jump keeps it.  Not a public API.

Read without opening /dev/liveupdate (it admits one opener at a time): the sessions held now from
/proc/PID/fd, systemd's preserved fd stores from `systemctl show`, the incoming liveupdate number
from the kernel log, and whether this kernel registered the device (/proc/misc: only with LUO on).
Which jump keeps what (measured on the lab kernel, KHO.md section 7):

  preserved by                                        kexec -e    systemctl kexec
  a process holding LUO session fds                   kept        lost (systemd stops it first)
  a systemd fd store with FileDescriptorStorePreserve lost        kept (PID 1 serialises it)
"""

from __future__ import annotations

import os
import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import Cmdline, GrammarError, parse_bool
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import log_message

SESSION_LINK = re.compile(r"^anon_inode:\[luo_session\] ?(.*)$")
# The kernel's own messages (kernel/liveupdate, 7.2 and 7.3), each matched whole; %lld has at most 19 digits.
INCOMING_LOG = re.compile(r"luo: Retrieved live update data, liveupdate number: (\d{1,19})")
# The new kernel's word that it could not restore what it was handed (7.3: at the first open of /dev/liveupdate,
# which then fails, as every later open does: EIO).
SESSION_FAILED = (re.compile(r"luo: Failed to deserialize files for session \[(.{1,64})\] -?\w{1,32}"),
                  re.compile(r"luo: Failed to allocate session \[(.{1,64})\] during deserialization -?\w{1,32}"),
                  re.compile(r"luo: Failed to insert session \[(.{1,64})\] -?\w{1,32}"))
NO_HANDLER = re.compile(r"luo: No registered handler for compatible '(.{1,48})'")
RESTORE_PATTERNS = tuple(("sessions", rx) for rx in SESSION_FAILED) + (("handlers", NO_HANDLER),)
MISC_BYTES = 1 << 16  # /proc/misc, read at most
MAX_PIDS = 65536  # /proc entries read at most (bounded on a host with a runaway process count)
MAX_FDS = 4096  # fds read per process at most
MAX_LISTED = 256  # sessions and holders reported at most
UNIT_PROPERTIES = ("Id", "ActiveState", "FileDescriptorStorePreserve", "NFileDescriptorStore", "LUOSession")
LOSSES = ("process_sessions", "fd_stores")
METHODS = ("auto", "kexec", "systemctl")


class LossRefused(ValueError):
    """The requested jump would lose preserved live-update state the user did not accept losing."""


def _unit_of(procfs: str, pid: str) -> str | None:
    try:
        with open(os.path.join(procfs, pid, "cgroup"), encoding="utf-8", errors="replace") as f:
            text = f.read(4096)
    except OSError:
        return None
    units = re.findall(r"/([^/\n]+\.(?:service|scope))(?:/|$)", text, re.M)
    return units[-1] if units else None


def _comm(procfs: str, pid: str) -> str | None:
    try:
        with open(os.path.join(procfs, pid, "comm"), encoding="utf-8", errors="replace") as f:
            return f.read(64).strip()
    except OSError:
        return None


def holders(procfs: str = paths.PROCFS, devfs: str = paths.DEVFS) -> dict:
    """LUO session fds held now (name, pid, comm, unit), and who holds /dev/liveupdate, from /proc/PID/fd."""
    device = os.path.join(devfs, "liveupdate")
    sessions, device_holders, truncated = [], [], False
    try:
        pids = [e for e in os.listdir(procfs) if e.isdigit()]
    except OSError:
        return {"sessions": [], "device_holders": [], "truncated": False}
    if len(pids) > MAX_PIDS:
        pids, truncated = pids[:MAX_PIDS], True
    for pid in pids:
        fd_dir = os.path.join(procfs, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds[:MAX_FDS]:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            m = SESSION_LINK.match(link)
            if not m and link != device:
                continue
            entry = {"pid": int(pid), "comm": _comm(procfs, pid), "unit": _unit_of(procfs, pid)}
            target = sessions if m else device_holders
            if len(target) >= MAX_LISTED:
                truncated = True
                continue
            target.append({"name": m.group(1), **entry} if m else entry)
    return {"sessions": sessions, "device_holders": device_holders, "truncated": truncated}


def parse_systemctl_show(text: str) -> list:
    """`systemctl show -p ... UNITS` output (blocks of Key=Value, blank-line separated) as unit records."""
    units = []
    for block in re.split(r"\n\s*\n", text or ""):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if not props.get("Id"):
            continue
        try:
            stored = int(props.get("NFileDescriptorStore") or 0)
        except ValueError:
            stored = 0
        units.append({"unit": props["Id"], "active": props.get("ActiveState"),
                      "preserve": props.get("FileDescriptorStorePreserve") or None,
                      "luo_session": props.get("LUOSession") or None, "fd_store": stored})
    return units


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|s|min|h)\b")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def seconds(text: str) -> float | None:
    """systemd's time span ('2min 58.735s', '313ms') in seconds."""
    parts = _DURATION.findall(text or "")
    return round(sum(float(n) * _UNIT_SECONDS[u] for n, u in parts), 3) if parts else None


def boot_phases(text: str) -> dict | None:
    """`systemd-analyze time`'s phases; after a kexec (systemd 262) they start with the old boot's
    (stopping), (exit) and (systemd-shutdown), then (kernel) and (userspace).  None when it printed none."""
    m = re.search(r"Startup finished in (.*?)(?: = |$)", text or "", re.M)
    if not m:
        return None
    phases = {}
    for part in m.group(1).split(" + "):
        name = re.search(r"\(([\w-]+)\)\s*$", part)
        if name:
            phases[name.group(1)] = seconds(part[:name.start()])
    return phases or None


def systemd(run_command) -> dict | None:
    """systemd's version, KExecCount and the units that preserve state across a kexec; None without systemd."""
    rc, out, _err = run_command(["systemctl", "--version"])
    if rc != 0:
        return None
    m = re.match(r"systemd (\d+)", out or "")
    rc, count, _err = run_command(["systemctl", "show", "-p", "KExecCount", "--value"])
    count = (count or "").strip()
    rc_units, units_out, _err = run_command(["systemctl", "show", "-p", ",".join(UNIT_PROPERTIES), "--",
                                             "*.service"])
    units = parse_systemctl_show(units_out) if rc_units == 0 else []
    keep = [u for u in units if u["preserve"] == "yes" or u["luo_session"]]
    rc_time, analyze, _err = run_command(["systemd-analyze", "time"])
    return {"version": int(m.group(1)) if m else None,
            "kexec_count": int(count) if rc == 0 and count.isdigit() else None,
            "preserving_units": keep[:MAX_LISTED],
            "boot_phases": boot_phases(analyze) if rc_time == 0 else None}


def _messages(log_lines) -> list:
    return [log_message(x) for x in (log_lines or [])[:4096]]


def incoming_number(log_lines) -> int | None:
    """The liveupdate number this boot received, from the kernel's own log line."""
    for line in reversed(_messages(log_lines)):
        m = INCOMING_LOG.fullmatch(line)
        if m:
            return int(m.group(1))
    return None


def restore_failures(log_lines) -> dict:
    """The sessions the kernel logged it could not restore, and the file handlers it lacked."""
    found: dict = {"sessions": [], "handlers": []}
    for line in _messages(log_lines):
        for key, rx in RESTORE_PATTERNS:
            m = rx.fullmatch(line)
            if m and m.group(1) not in found[key]:
                found[key].append(m.group(1))
    return found


def registered(procfs: str) -> bool | None:
    """Whether this kernel registered /dev/liveupdate (it does only with LUO enabled: liveupdate=on and KHO on),
    from its own list of misc devices; None where /proc/misc cannot be read."""
    try:
        with open(os.path.join(procfs, "misc"), encoding="utf-8", errors="replace") as f:
            text = f.read(MISC_BYTES)
    except OSError:
        return None
    return any(line.split()[1:] == ["liveupdate"] for line in text.splitlines())


def gather(devfs: str, procfs: str, cmdline: str, log_lines, run_command) -> dict:
    device = os.path.exists(os.path.join(devfs, "liveupdate"))
    param = re.findall(r"(?:^|\s)liveupdate=(\S*)", cmdline or "")
    held = holders(procfs, devfs) if device else {"sessions": [], "device_holders": [], "truncated": False}
    return {
        "device": device,
        "registered": registered(procfs),
        "param": param[-1] if param else None,
        **held,
        "incoming_number": incoming_number(log_lines),
        "restore_failures": restore_failures(log_lines),
        "systemd": systemd(run_command),
    }


def held_sessions(lu: dict | None) -> list:
    """The LUO sessions processes hold; PID 1's own (LUOSession= units, fd stores) are systemd's to carry."""
    return [s for s in ((lu or {}).get("sessions") or []) if s.get("pid") != 1]


def preserving_units(lu: dict | None) -> list:
    """The systemd units that preserve state through the jump: an fd store, or an LUO session of their own."""
    units = ((lu or {}).get("systemd") or {}).get("preserving_units") or []
    return [u for u in units if u.get("fd_store") or u.get("luo_session")]


def at_risk(lu: dict) -> dict:
    """What each jump method would lose: {'kexec': [...fd stores...], 'systemctl': [...process sessions...]}."""
    stores, sessions = preserving_units(lu), held_sessions(lu)
    return {"kexec": [f"{u['unit']} (fd store: {u.get('fd_store') or 0} fds"
                      + (f", LUO session {u['luo_session']}" if u.get("luo_session") else "") + ")" for u in stores],
            "systemctl": [f"session {s.get('name') or '?'} held by pid {s['pid']} ({s.get('comm') or '?'}"
                          + (f", {s['unit']}" if s.get("unit") else "") + ")" for s in sessions]}


def choose_method(lu: dict, requested: str, accept_loss=()) -> tuple:
    """(method, what is accepted lost) for the jump, or LossRefused naming what would be lost and how to choose.

    auto: systemctl where systemd preserves fd stores, kexec otherwise; refused where each method would
    lose something, unless accept_loss names the loss.  An explicit method that loses state is refused
    the same way.
    """
    if requested not in METHODS:
        raise ValueError(f"method is {requested!r}; the valid values are {', '.join(METHODS)}")
    bad = [x for x in accept_loss or () if x not in LOSSES]
    if bad:
        raise ValueError(f"accept_loss has {bad!r}; the valid values are {', '.join(LOSSES)}")
    risk = at_risk(lu)
    loss_name = {"kexec": "fd_stores", "systemctl": "process_sessions"}
    if requested == "auto":
        if risk["kexec"] and risk["systemctl"]:
            if "fd_stores" in (accept_loss or ()):
                requested = "kexec"
            elif "process_sessions" in (accept_loss or ()):
                requested = "systemctl"
            else:
                raise LossRefused(
                    "no jump method keeps everything this host preserves: kexec -e would lose "
                    f"{'; '.join(risk['kexec'])}, systemctl kexec would lose {'; '.join(risk['systemctl'])}. "
                    "Stop one side first, or accept a loss with accept_loss: [fd_stores] or [process_sessions]")
        else:
            requested = "systemctl" if risk["kexec"] else "kexec"
    lost = risk[requested]
    if lost and loss_name[requested] not in (accept_loss or ()):
        other = "systemctl" if requested == "kexec" else "kexec"
        raise LossRefused(f"method {requested} would lose {'; '.join(lost)} (method {other} keeps them); "
                          f"use method auto, or accept the loss with accept_loss: [{loss_name[requested]}]")
    return requested, ([loss_name[requested]] if lost else [])


def _last_bool(line: str, key: str) -> bool | None:
    """An early parameter's value as the kernel applies it: the last one kstrtobool reads (a bare or bad one is
    refused and changes nothing); None where no value is read."""
    value = None
    for text in Cmdline(line or "").get_all(key):
        try:
            value = parse_bool(text or "")
        except GrammarError:
            continue
    return value


def luo_off(line: str) -> str | None:
    """Why a kernel booted with ``line`` would not turn LUO on (no /dev/liveupdate); None where it would."""
    if _last_bool(line, "kho") is False:
        return "the target command line turns KHO off (kho=), and LUO with it"
    if _last_bool(line, "liveupdate") is not True:
        return "the target command line has no liveupdate=on"
    return None


def target_refusal(lu: dict | None, target: str, method: str, accept_loss=()) -> str | None:
    """Why a load with the command line ``target`` is refused: the jump ``method`` carries live update state (the
    sessions processes hold across kexec -e, preserved fd stores across systemctl kexec) that only a kernel with
    /dev/liveupdate can hand back, and the target line would not turn LUO on; None where it would, or where the
    loss is accepted (accept_loss) or nothing is carried."""
    risk = at_risk(lu or {})
    carried, loss = (risk["systemctl"], "process_sessions") if method == "kexec" else (risk["kexec"], "fd_stores")
    why = luo_off(target) if carried and loss not in (accept_loss or ()) else None
    if not why:
        return None
    return (f"{why}: the new kernel would have no /dev/liveupdate, and nothing in it could give back "
            f"{'; '.join(carried)}. Add liveupdate=on to the target command line (kho_kexec cmdline or append), or "
            f"accept the loss with accept_loss: [{loss}]")
