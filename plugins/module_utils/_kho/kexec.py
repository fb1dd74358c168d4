# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kexec-tools, wrapped once: image checks, the target command line, load, unload, the record.

Not a public API.  Every command is an argument list.  The one shell text, the detached jump (jump_job), is
built only from this module's own values (a resolved binary path, a pid, fixed and option paths), each quoted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time

from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import Cmdline, GrammarError, parse_bool
from ansible_collections.kexec.kho.plugins.module_utils._kho import compat, facts, host, liveupdate, regions
from ansible_collections.kexec.kho.plugins.module_utils._kho import boot_files, files, image, jump_status, lock, stage, way_back
from ansible_collections.kexec.kho.plugins.module_utils._kho.finalize import FinalizeError, KhoInactive, require_kho, transition
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

JUMP_WAIT_STEPS = 100  # the queued jump waits at most this many 50 ms steps for the module's process to exit
HEADER_BYTES = 0x240


class KexecError(Exception):
    pass


# kho_kexec's options, once: the module validates them on the host, and the action plugin validates them
# on the controller before state=executed reads or changes anything there.
ARGUMENT_SPEC = {
    **host.ARGUMENT_SPEC,
    "state": {"type": "str", "required": True, "choices": ["loaded", "unloaded", "executed", "confirmed", "disarmed"]},
    "kernel": {"type": "path"},
    "initrd": {"type": "path"},
    "cmdline": {"type": "str"},
    "append": {"type": "str"},
    "ensure_kho": {"type": "bool", "default": True},
    "finalize": {"type": "bool", "default": False},
    "force": {"type": "bool", "default": False},
    "replace_loaded": {"type": "bool", "default": False},
    "state_dir": {"type": "path", "default": paths.STATE_DIR},
    "method": {"type": "str", "default": "auto", "choices": list(liveupdate.METHODS)},
    "accept_loss": {"type": "list", "elements": "str", "default": [], "choices": list(liveupdate.LOSSES)},
    "drop_regions": {"type": "list", "elements": "str", "default": []},
    "target_check": {"type": "str", "default": "refuse", "choices": ["refuse", "report"]},
    "connect_timeout": {"type": "int", "default": 5},
    "kexec_timeout": {"type": "int", "default": 300},
    "post_kexec_delay": {"type": "float", "default": 0},
    "poll_interval": {"type": "float", "default": 0.25},
    "not_jumped_after": {"type": "int", "default": 60},
    "test_command": {"type": "str"},
    "verify_handover": {"type": "bool", "default": True},
    "pmsg": {"type": "str"},
    "expect_boot_id": {"type": "str"},
    "run_id": {"type": "str"},
    "facts_after": {"type": "bool", "default": False},
    "pstore_search": facts.PSTORE_SEARCH_SPEC,
    "confirm_timeout": {"type": "int", "default": 0},
    "return": {"type": "str", "default": way_back.NEVER, "choices": list(way_back.POLICIES)},
    "stage_ttl": {"type": "int", "default": 0},
    "staged": {"type": "bool", "default": False},
    "owner": {"type": "dict"},
    "lock_path": lock.ARGUMENT_SPEC["path"],  # kho_lock's path: the lock a staged load is bound to
}
REQUIRED_IF = [("state", "loaded", ("kernel",)), ("state", "executed", ("kernel",))]
MUTUALLY_EXCLUSIVE = [("cmdline", "append")]
JUMP_OPTIONS = ("connect_timeout", "kexec_timeout", "post_kexec_delay", "poll_interval", "not_jumped_after",
                "test_command", "verify_handover", "facts_after", "pstore_search", "return")
RANGES = {"connect_timeout": (1, 3600), "kexec_timeout": (1, 86400), "post_kexec_delay": (0, 3600),
          "poll_interval": (0.05, 60), "not_jumped_after": (1, 86400), "confirm_timeout": (0, 86400),
          "stage_ttl": (0, stage.MAX_TTL)}


def check_values(params: dict) -> None:
    """What an argument spec cannot say (a kernel path that is empty, numeric ranges); raises ValueError."""
    if params.get("state") in ("loaded", "executed") and not params.get("kernel"):
        raise ValueError(f"kernel is {params.get('kernel')!r}; state={params['state']} needs the path of the kernel "
                         "image on the host")
    if params.get("return", way_back.NEVER) != way_back.NEVER and params.get("state") != "executed":
        raise ValueError(f"return is {params['return']!r}; a return is made only after a jump: it needs state=executed "
                         f"(state is {params.get('state')!r})")
    for name, (low, high) in RANGES.items():
        value = params.get(name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"{name} is {value!r}; the valid range is {low} to {high} seconds")


def image_kind(path: str) -> str:
    """What kexec_file_load() will be asked to take; raises for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise KexecError(f"kernel image {path} {unreadable(exc)}") from exc
    if head[0x202:0x206] == b"HdrS":
        return "bzImage"
    if head[0x38:0x3C] == b"ARM\x64":
        return "Image"
    if head[:2] == b"MZ" and head[4:8] == b"zimg":
        return "zboot"
    raise KexecError(f"{path} is not a kernel image that kexec -s loads: no x86 bzImage ('HdrS' at 0x202), "
                     "arm64 Image ('ARM\\x64' at 0x38) or EFI zboot header")


def unreadable(exc: OSError) -> str:
    """Why a file given as an option cannot be read, for any OSError (a path through a file, a loop, EIO...)."""
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, PermissionError):
        return "is not readable (run with become: true)"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return f"cannot be read: {exc.strerror or exc}"


def check_readable(path: str, what: str) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise KexecError(f"{what} {path} {unreadable(exc)}") from exc


def sha256_file(path: str | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def target_cmdline(running: str, cmdline: str | None = None, append: str | None = None,
                   ensure_kho: bool = True) -> str:
    """The next kernel's command line: exact, or the running one (+ append); kho=on ensured."""
    if cmdline is not None:
        line = cmdline
    else:
        current = Cmdline(running)
        current.remove("BOOT_IMAGE")  # the boot loader's, as kexec --reuse-cmdline drops it
        line = " ".join(x for x in (str(current).strip(), (append or "").strip()) if x)
    if ensure_kho:
        c = Cmdline(line)
        try:
            on = c.has("kho") and parse_bool(c.get("kho") or "")
        except GrammarError:
            on = False
        if not on:
            c.set("kho", "on")
        line = str(c)
    return line.strip()


def competing_loaders(defaults: str = paths.DEBIAN_KEXEC_DEFAULTS, systemd: str = paths.SYSTEMD_RUNNING) -> list:
    """What on the host loads its own image, without -s, when none is loaded."""
    found = []
    try:
        with open(defaults) as fh:
            if any(line.strip().replace('"', "") == "LOAD_KEXEC=true" for line in fh):
                found.append(f"{defaults}: LOAD_KEXEC=true, Debian's kexec-load loads /vmlinuz without -s "
                             "at shutdown when nothing is loaded")
    except OSError:
        pass
    if os.path.isdir(systemd):
        found.append("systemd: 'systemctl kexec' loads the default boot entry without -s when nothing is loaded")
    return found


def load_argv(binary: str, kernel: str, initrd: str | None, cmdline: str) -> list:
    """The one form of a KHO load: kexec -s -l KERNEL [--initrd=F] --command-line=S (the host's self-return too)."""
    return [binary, "-s", "-l", kernel, *([f"--initrd={initrd}"] if initrd else []), f"--command-line={cmdline}"]


IMAGE_CACHE = "image.json"  # under the state directory: the last target image read (Kexec.inspect_image)


class Kexec:
    """kexec-tools on the managed host, through AnsibleModule.run_command with argument lists."""

    def __init__(self, module, state_dir: str = paths.STATE_DIR):
        self.module = module
        self.state_dir = state_dir
        self.record_path = os.path.join(state_dir, "loaded.json")
        self.binary = module.get_bin_path("kexec")

    def require(self) -> str:
        if not self.binary:
            raise KexecError("kexec not found on the host: install kexec-tools (2.0.14 or later, for kexec -s)")
        rc, out, err = self.module.run_command([self.binary, "--help"])
        if "--kexec-file-syscall" not in out + err and "\n -s" not in out + err:
            raise KexecError(f"{self.binary} has no -s (kexec_file_load): KHO needs the in-kernel file loader, "
                             "install kexec-tools 2.0.14 or later")
        return self.binary

    def load_argv(self, kernel: str, initrd: str | None, cmdline: str) -> list:
        return load_argv(self.binary or "kexec", kernel, initrd, cmdline)

    def load(self, kernel: str, initrd: str | None, cmdline: str, lockdown: str | None) -> list:
        argv = self.load_argv(kernel, initrd, cmdline)
        rc, out, err = self.module.run_command(argv)
        if rc:
            text = (err or out).strip()
            hint = ""
            if lockdown not in (None, "none") or "rejected" in text or "not permitted" in text:
                hint = (f" (kernel lockdown is '{lockdown}': with lockdown or KEXEC_SIG_FORCE only a signed "
                        "image loads)")
            raise KexecError(f"kexec -s -l {kernel} failed (rc {rc}): {text}{hint}")
        return argv

    def unload(self) -> list:
        argv = [self.binary or "kexec", "-u"]
        rc, out, err = self.module.run_command(argv)
        if rc:
            raise KexecError(f"kexec -u failed (rc {rc}): {(err or out).strip()}")
        return argv

    # ------------------------------------------------------------ the record under /run

    def read_record(self) -> dict | None:
        try:
            with open(self.record_path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def write_record(self, record: dict) -> None:
        stage.disarm(self.state_dir)  # a new load is nobody's staged one until stage.arm says so
        files.write_atomic(self.record_path, json.dumps({**record, "loaded_at": time.time()}).encode(),
                           mode=0o600, dir_mode=0o700)

    def forget(self) -> None:
        stage.disarm(self.state_dir)
        try:
            os.unlink(self.record_path)
        except FileNotFoundError:
            pass

    def inspect_image(self, path: str, digest: str | None, keep: bool) -> dict:
        """image.inspect, remembered for one image under the state directory, by its sha256: the role's preflight
        reads the target and the load on the same boot takes that answer, without decompressing the image again
        (seconds on a slow host).  ``keep`` false (check mode) writes nothing; a cache that cannot be read or
        written is only a slower run."""
        cache = os.path.join(self.state_dir, IMAGE_CACHE)
        try:
            with open(cache, encoding="utf-8") as fh:
                saved = json.load(fh)
            if digest and saved.get("sha256") == digest and saved.get("path") == path:
                return saved["inspect"]
        except (OSError, ValueError, AttributeError, KeyError):
            pass
        rec = image.inspect(path)
        if keep and digest:
            try:
                files.write_atomic(cache, json.dumps({"sha256": digest, "path": path, "inspect": rec}).encode(),
                                   mode=0o600, dir_mode=0o700)
            except OSError:
                pass
        return rec


WANTED = ("kernel", "kernel_sha256", "initrd", "initrd_sha256", "cmdline", "boot_id")  # a load's record


def describe(kernel: str, initrd: str | None, cmdline: str, boot_id: str | None, kernel_sha256: str | None = None) -> dict:
    """A load's record; ``kernel_sha256`` where the caller hashed the image already (it is read once)."""
    digest = kernel_sha256 or sha256_file(kernel)
    return dict(zip(WANTED, (kernel, digest, initrd, sha256_file(initrd), cmdline, boot_id)))


def matches(record: dict | None, wanted: dict) -> bool:
    return bool(record) and all(record.get(k) == v for k, v in wanted.items())


def jump_method(module, kho, p: dict, lu: dict | None = None) -> tuple:
    """The jump method that keeps what this host preserves through live update, before anything changes.

    Without /dev/liveupdate nothing is carried by LUO: auto means kexec.  With it, the sessions held now and
    systemd's preserved fd stores decide (module_utils/_kho/liveupdate.py); a loss not accepted is refused.
    ``lu`` is live update as this run gathered it already (kho_facts), else it is gathered here.
    """
    if not os.path.exists(os.path.join(kho.devfs, "liveupdate")):
        return ("kexec" if p["method"] == "auto" else p["method"]), []
    if lu is None:
        lu = liveupdate.gather(kho.devfs, kho.procfs, kho.cmdline(), None, module.run_command)
    try:
        return liveupdate.choose_method(lu, p["method"], p["accept_loss"])
    except liveupdate.LossRefused as exc:
        raise KexecError(str(exc)) from exc


class Changes:
    """What this run changed on the host and has not undone, noted as it happens: the one source of the undo, and
    of the jump status (``status``, a jump_status.Writer where state=executed writes one), which hears of each
    change before the next step, so that a poll after a lost answer knows what a rollback must undo."""

    def __init__(self, status: jump_status.Writer | None = None, disarm=None):
        self.status, self.finalized, self.loaded, self.armed = status, False, False, False
        self.disarm = disarm  # removes the host's own return (self_return.disarm), where this run may arm one
        self.undone: list = []  # what undo() undid, in order: kho_kexec's failure says it (undone), never only its msg

    def done(self) -> tuple:
        return tuple(word for word, on in ((paths.DONE_FINALIZE, self.finalized), (paths.DONE_LOAD, self.loaded),
                                           (paths.DONE_RETURN, self.armed)) if on)

    def tell(self, state: str = paths.JUMP_RUNNING) -> None:
        if self.status is not None:
            self.status.write(state, self.done())

    def did(self, what: str) -> None:
        setattr(self, {paths.DONE_FINALIZE: "finalized", paths.DONE_LOAD: "loaded", paths.DONE_RETURN: "armed"}[what],
                True)
        self.tell()

    def failed(self) -> None:
        """The run will not queue the jump: said in the status (with what is left), where it can still be written."""
        try:
            self.tell(paths.JUMP_FAILED)
        except jump_status.StatusError:
            pass  # the answer says it too

    def undo(self, kho, kexec: Kexec | None) -> list:
        """Undo the host's own return this run armed, the image it loaded, then a finalize it made, each noted as
        undone; raises where one fails."""
        undone = []
        if self.armed and self.disarm is not None:
            self.disarm()
            self.armed = False
            undone.append("the host's own return disarmed")
        if self.loaded and kexec is not None:
            present = kho.kexec_loaded() is not False  # noted ahead of a load that failed: nothing to unload
            if present:
                kexec.unload()
            kexec.forget()
            self.loaded = False
            undone.extend(["the image unloaded"] if present else [])
        if self.finalized:
            transition(kho, False, False)
            self.finalized = False
            undone.append("the finalize done by this task aborted")
        return undone

    def back_out(self, kho, exc: Exception, kexec: Kexec | None = None):
        """Called while handling ``exc``: undo(), then raise ``exc`` saying what was undone (``exc`` itself where
        nothing was), or what is left where undoing failed."""
        try:
            undone = self.undo(kho, kexec)
        except Exception as undo_exc:  # pylint: disable=broad-except  # said, with what is left
            self.failed()
            raise KexecError(f"{exc}; undoing it failed: {undo_exc}") from exc
        self.undone.extend(undone)
        self.failed()
        if not undone:
            raise exc
        raise KexecError(f"{exc}; nothing was jumped: {', '.join(undone)}") from exc


def undo(kho, finalized_here: bool, loaded: Kexec | None = None) -> list:
    """Undo what this run changed: the image it ``loaded``, then a finalize done here.  Returns what was undone;
    raises KexecError or FinalizeError where undoing fails."""
    changes = Changes()
    changes.finalized, changes.loaded = finalized_here, loaded is not None
    return changes.undo(kho, loaded)


def back_out(kho, exc: Exception, finalized_here: bool, loaded: Kexec | None = None):
    """Changes.back_out for what the caller names."""
    changes = Changes()
    changes.finalized, changes.loaded = finalized_here, loaded is not None
    changes.back_out(kho, exc, loaded)


def target_support(kho, p: dict, lu: dict | None, target: dict) -> dict:
    """Whether the target kernel (``target``: image.inspect's record of it) reads what this one hands over
    (compat.check); KexecError where refused."""
    held = bool(liveupdate.held_sessions(lu))
    running_image = host.boot_images(kho.release()).get("kernel")
    support = compat.check(compat.handed_over(kho, lu, running_image), target, held)
    support["source_release"] = kho.release()
    why = compat.refusal(support, held, p["target_check"])
    if why:
        raise KexecError(why)
    return support


def target_initrd(p: dict, release: str | None) -> tuple:
    """(the initrd that belongs to the target, or None; how that was decided): the user's, or found beside the
    image for its release (boot_files.resolve); KexecError for a modular target without one (#35)."""
    try:
        return boot_files.resolve(p["kernel"], p["initrd"], release)
    except ValueError as exc:
        raise KexecError(str(exc)) from exc


# What was loaded before this run's load (the load's loaded_before).
LOADED_NOTHING = "nothing"
LOADED_RECORDED = "recorded"  # kexec.kho's record on this boot names the image asked for
LOADED_OTHER = "other"  # loaded outside this run: by hand, by another tool, or by kexec.kho with other values


def loaded_before(kho, record: dict | None, wanted: dict) -> str:
    """What is loaded now, as far as the host says: the record is only this collection's word, not the kernel's
    (another loader may have replaced the image since), so it lets a load be skipped, never a jump go unchecked."""
    loaded = kho.kexec_loaded()
    if loaded is False:
        return LOADED_NOTHING
    return LOADED_RECORDED if loaded and matches(record, wanted) else LOADED_OTHER


def outside_image(kho, record: dict | None) -> str:
    """The refusal of an image loaded outside this run, naming what is known of it."""
    if kho.kexec_loaded() is None:
        what = f"whether an image is loaded is unknown ({kho.kexec_loaded_path} cannot be read)"
    elif record is None:
        what = ("an image is loaded that kexec.kho did not load on this boot (loaded by hand with kexec -l or -s -l, "
                "or by another tool)")
    else:
        what = (f"an image is loaded, and kexec.kho's last load on this boot was {record.get('kernel')} with the "
                f"command line {record.get('cmdline')!r}, not what is asked (the image loaded is that one, or another "
                "loader's since)")
    return (f"{what}: this run did not load it and leaves it as it is; unload it first (kexec.kho.kho_kexec "
            "state=unloaded), or set replace_loaded: true (kexec.kho.kho_kexec) to replace it; nothing was changed")


def plan_load(module, kho, kexec: Kexec, p: dict, lu: dict | None = None) -> tuple:
    """Everything state=loaded decides, changing nothing: (the result so far, the steps it would take).

    The steps: none (this image is loaded already), ["load"], or ["finalize", "load"].  Everything is validated
    here, so that preflight, check mode and the load itself refuse the same things.  ``lu`` as in jump_method.
    """
    kind = image_kind(p["kernel"])
    kernel_sha256 = sha256_file(p["kernel"])
    target = kexec.inspect_image(p["kernel"], kernel_sha256, keep=not module.check_mode)
    p["initrd"], initrd_how = target_initrd(p, target.get("release"))
    if p["initrd"]:
        check_readable(p["initrd"], "initrd")
    kexec.require()
    generation = require_kho(kho)
    running = kho.cmdline()
    cmdline = target_cmdline(running, p["cmdline"], p["append"], p["ensure_kho"])
    kept = regions.check_target(kho, running, cmdline, p["drop_regions"], p.get("pmsg") is not None)
    if kept["refusal"]:
        raise KexecError(kept["refusal"])
    if lu is None and os.path.exists(os.path.join(kho.devfs, "liveupdate")):
        lu = liveupdate.gather(kho.devfs, kho.procfs, running, None, module.run_command)
    wanted = describe(p["kernel"], p["initrd"], cmdline, kho.boot_id(), kernel_sha256)
    record = kexec.read_record()
    before = loaded_before(kho, record, wanted)
    if before == LOADED_OTHER and not p.get("replace_loaded"):
        raise KexecError(outside_image(kho, record))
    method, accepted = jump_method(module, kho, p, lu)
    lost = liveupdate.target_refusal(lu, cmdline, method, p["accept_loss"])
    if lost:
        raise KexecError(lost)
    result = {"interface": generation, "image_kind": kind, "cmdline": cmdline, "lockdown": kho.lockdown(),
              "competing_loaders": competing_loaders(), "previous": record, "finalized_here": False,
              "argv": kexec.load_argv(p["kernel"], p["initrd"], cmdline), "method": method,
              "accepted_loss": accepted, "loaded_here": False, "loaded_before": before, "reloaded": False,
              "target": target_support(kho, p, lu, target), "dropped_regions": kept["dropped"],
              "initrd_how": initrd_how, **wanted}
    if before == LOADED_RECORDED and not p["force"]:
        return result, []
    if generation == "finalize" and not kho.finalized():
        if not p["finalize"]:
            raise KexecError("this kernel has a finalize state and is not finalized: on 6.16 to 6.18 kernels the "
                             "handover data is only taken at load time when finalized. Run kexec.kho.kho_finalize "
                             "state=finalized first, or set finalize: true")
        return result, ["finalize", "load"]
    return result, ["load"]


PLANNED = {(): "this image is loaded already", ("load",): "would load", ("finalize", "load"): "would finalize, then load"}


def planned(result: dict, steps: list) -> dict:
    """A plan as the module's answer where nothing is done (check mode, preflight, or nothing to do)."""
    return {**result, "changed": bool(steps), "loaded": True, "msg": PLANNED[tuple(steps)]}


LOADED_MSG = {LOADED_NOTHING: "loaded", LOADED_RECORDED: "loaded again (the image its record names)",
              LOADED_OTHER: "loaded, replacing an image loaded outside this run (replace_loaded)"}


def do_load(kho, kexec: Kexec, result: dict, steps: list, changes: Changes | None = None) -> dict:
    """Carry out plan_load's steps, each noted in ``changes``; a failure is undone, and raised saying what was.

    Loading again the image the record names (state=executed, force) leaves what was there: it is not this run's
    load to undo (loaded_here false, reloaded true)."""
    changes = changes if changes is not None else Changes()
    fresh = result["loaded_before"] != LOADED_RECORDED
    try:
        if "finalize" in steps:
            transition(kho, True, False)
            changes.did(paths.DONE_FINALIZE)
        if result["loaded_before"] == LOADED_NOTHING:
            # Noted ahead of the load: a run killed between kexec -l and its next word leaves a status that says
            # to unload, and with nothing loaded before (under the lock) no other image can be lost by it.
            changes.did(paths.DONE_LOAD)
        kexec.load(result["kernel"], result["initrd"], result["cmdline"], result["lockdown"])
        if fresh and not changes.loaded:
            changes.did(paths.DONE_LOAD)
        if kho.kexec_loaded() is False:
            raise KexecError("kexec -s -l returned 0 but /sys/kernel/kexec_loaded is still 0")
        kexec.write_record({k: result[k] for k in WANTED})
    except Exception as exc:  # pylint: disable=broad-except  # whatever failed, what this run changed is undone
        changes.back_out(kho, exc, kexec)  # raises
    return {**result, "changed": True, "loaded": True, "finalized_here": changes.finalized, "loaded_here": fresh,
            "reloaded": not fresh, "msg": LOADED_MSG[result["loaded_before"]]}


def ensure_loaded(module, kho, kexec: Kexec, p: dict, lu: dict | None = None, changes: Changes | None = None) -> dict:
    """state=loaded: plan (validate everything), then, unless in check mode or loaded already, do."""
    result, steps = plan_load(module, kho, kexec, p, lu)
    if not steps or module.check_mode:
        return planned(result, steps)
    return do_load(kho, kexec, result, steps, changes)


def jump_job(method: str, kexec: str, pid: int | None, status: str, loaded: str, prefix: str | None) -> str:
    """The detached jump, as sh text: wait for the process that queued it to exit, then jump.

    The wait (at most JUMP_WAIT_STEPS x 50 ms, then 0.3 s for the session to flush) lets the module's answer
    reach the controller before the kernel goes away.  A `kexec -e` that returns at all did not jump, and
    `systemctl kexec` returns 0 once the jump is queued: either writes its failure to ``status`` for the
    controller's next poll, and so does a job that finds no image loaded when the jump is due (``loaded`` is
    /sys/kernel/kexec_loaded), each after ``prefix`` (the run's status line up to its state) and by a rename, so
    that a poll never reads half a line.  Only the module's own values go in (a resolved binary path, an int, fixed
    and option paths, a prefix of checked words), each quoted.  Where ``pid`` and ``prefix`` are None, the job reads
    them from its $1 and $2 (the staged switch's sh passes its own, stage.switch_script).
    """
    pid_word, prefix_word = ('"$1"', '"$2"') if pid is None else (str(int(pid)), shlex.quote(prefix))
    wait = (f"n=0; while kill -0 {pid_word} 2>/dev/null && [ $n -lt {JUMP_WAIT_STEPS} ]; "
            "do sleep 0.05; n=$((n+1)); done; sleep 0.3")
    new = shlex.quote(status + ".new")

    def say(state: str) -> str:
        return f"{{ printf '%s %s\\n' {prefix_word} {state} > {new} && mv -f {new} {shlex.quote(status)}; }}"
    record = say(f'"{paths.JUMP_EXIT} $?"')
    # Checked again when the jump is due: an image unloaded meanwhile would let systemctl kexec load its own.
    guard = f"grep -qx 1 {shlex.quote(loaded)} || {{ {say(paths.JUMP_NOT_LOADED)}; exit 3; }}"
    jump = f"systemctl kexec || {record}" if method == "systemctl" else f"{shlex.quote(kexec)} -e; {record}"
    return f"{wait}; {guard}; {jump}"


def queue_jump(module, kho, kexec: Kexec, method: str, changes: Changes) -> list:
    """Start the jump detached from this run: a transient systemd unit where systemd runs, else a new session.

    Writes ``started`` to the run's jump status (``changes.status``) first, so that a poll of the old boot can tell
    a trigger that ran from a run that never queued one.  Returns the argv that queued it.
    """
    if changes.status is None:
        raise KexecError("the jump is queued only by a run that wrote its jump status")
    if kho.kexec_loaded() is not True:
        raise KexecError("no kexec image is loaded right before the jump")
    changes.tell(paths.JUMP_STARTED)
    status = changes.status
    job = jump_job(method, kexec.binary or "kexec", status.pid, status.path, kho.kexec_loaded_path,
                   status.status.prefix())
    try:
        return host.detach(module, job, "queue the jump")
    except host.DetachError as exc:
        raise KexecError(str(exc)) from exc


def write_pmsg(kho, text: str) -> str:
    """Write text to pstore's message log (the canary a verification looks for after the jump)."""
    path = os.path.join(kho.devfs, paths.PMSG)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise KexecError(f"cannot write the pstore message to {path} (ramoops with a pmsg size, "
                         f"ramoops.pmsg_size=): {exc}") from exc
    return path


def stage_load(module, kho, kexec: Kexec, p: dict, changes: Changes | None = None) -> dict:
    """state=loaded with stage_ttl: a load of this run's own (refused where any image is loaded already, or where the
    kernel freezes its state at finalize), and its expiry (stage.arm); a failure unloads what it loaded."""
    changes = changes if changes is not None else Changes()
    if require_kho(kho) == "finalize":
        raise KexecError("staging is refused on a kernel with a finalize state (6.16 to 6.19): it freezes what it "
                         "hands over at finalize, so a staged load would hand over the state of the stage, not of "
                         "the switch; hand it over in one step")
    result, steps = plan_load(module, kho, kexec, p)
    if result["loaded_before"] != LOADED_NOTHING:
        raise KexecError(f"an image is loaded already ({result['loaded_before']}): a staged load is this run's own, "
                         "so that its expiry and every abort unload only what this run loaded; unload it first "
                         "(state=unloaded)")
    if module.check_mode:
        return {**planned(result, steps), "staged": None, "msg": "would load, staged"}
    result = do_load(kho, kexec, result, steps, changes)
    try:
        armed = stage.arm(module, kexec.state_dir, p["owner"], p["stage_ttl"], kexec.binary or "kexec",
                          result["kernel"], p["lock_path"])
        line = armed.pop("line")
        result = {**result, "staged": armed, "msg": f"loaded, staged for {p['stage_ttl']} s"}
        if stage.request_of(p["owner"]):  # the switch without a module run: its script and its answer
            armed["switch"] = stage.write_switch(kexec.state_dir, switch_script(kho, kexec, p, result, line),
                                                 {**result, "way_back": way_back.read(kho), "python": sys.executable})
    except Exception as exc:  # pylint: disable=broad-except  # the load this run made is undone
        stage.disarm(kexec.state_dir)
        changes.back_out(kho, exc, kexec)  # raises
    return result


def switch_script(kho, kexec: Kexec, p: dict, result: dict, line: str) -> str:
    """The staged switch's sh (stage.switch_script) for this load: its jump as queue_jump's, its paths as this
    run's."""
    job = jump_job(result["method"], kexec.binary or "kexec", None, paths.JUMP_STATUS, kho.kexec_loaded_path, None)
    return stage.switch_script(line, kexec.state_dir, p["lock_path"], kho.kexec_loaded_path, paths.JUMP_STATUS,
                               kexec.binary or "kexec", job)


def take_staged(kho, kexec: Kexec, p: dict) -> bool:
    """state=executed with staged: whether the load this run staged is taken up (its expiry removed), so that the
    jump loads nothing again; StageError where the staging run no longer holds the lock."""
    return stage.take_up(kexec.state_dir, p["owner"], p["lock_path"]) and kho.kexec_loaded() is True


def start_jump(module, kho, kexec: Kexec, p: dict, changes: Changes | None = None, arm=None) -> dict:
    """state=executed, the host's part: load (as state=loaded, but always: the record is not the kernel's word of
    what is loaded), record the way back (way_back.read), write the pstore message, arm the host's own return
    (``arm``: called with the result so far, where confirm_timeout asks for one), queue the jump.

    One run before the jump.  Whatever fails in it is undone, and only what it changed (``changes``, which also
    tells the jump status): an image it loaded unloaded, a finalize it made aborted.
    """
    changes = changes if changes is not None else Changes()
    try:
        # The load this run staged, where it holds: what the record names is loaded, and unloaded on any failure
        # (this run's load).  Else loaded again, as always.
        reuse = take_staged(kho, kexec, p) if p.get("staged") and not module.check_mode else False
        result = ensure_loaded(module, kho, kexec, {**p, "force": not reuse}, changes=changes)
        if reuse:
            if result["loaded_before"] != LOADED_RECORDED:
                raise KexecError("the load this run staged is not what this task asks (kernel, initrd, command line)")
            changes.did(paths.DONE_LOAD)
            result.update(loaded_here=True, changed=True, msg="took up the load this run staged")
        result["reused_staged"] = reuse
        result["way_back"] = way_back.read(kho)  # read while the old kernel runs: after the jump only its disk is left
        if module.check_mode:
            return {**result, "triggered": False, "msg": "would load and jump to the new kernel"}
        if p["pmsg"] is not None:
            result["pmsg_path"] = write_pmsg(kho, p["pmsg"])
        if arm is not None:
            changes.did(paths.DONE_RETURN)  # noted ahead: a run killed while arming leaves a status that says to disarm
            result["self_return"] = arm(result)
        result["trigger"] = queue_jump(module, kho, kexec, result["method"], changes)
    except Exception as exc:  # pylint: disable=broad-except  # undone, then raised saying so
        changes.back_out(kho, exc, kexec)  # raises
    # The interpreter that ran this: the action's first command on the new boot reads the facts with it.
    return {**result, "triggered": True, "python": sys.executable, "msg": "loaded; the jump is queued"}


PREFLIGHT_OPTIONS = ("kernel", "initrd", "cmdline", "append", "ensure_kho", "finalize", "method", "accept_loss",
                     "drop_regions", "target_check", "state_dir")


def preflight(module, kho, options: dict, images: dict, lu: dict | None = None) -> dict:
    """What state=loaded would do with these options, changing nothing; a refusal is reported, never raised.

    Without a kernel, the running release's image found on the host is used (and its initrd, unless one is given).
    ``lu``: live update as gathered in the same run (not gathered again).
    """
    p = {**{k: ARGUMENT_SPEC[k].get("default") for k in PREFLIGHT_OPTIONS}, "force": False, "replace_loaded": False,
         **(options or {})}
    if not p["kernel"]:
        p["kernel"], p["initrd"] = images.get("kernel"), p["initrd"] or images.get("initrd")
    if not p["kernel"]:
        return {"ok": False, "kernel": None, "initrd": p["initrd"],
                "msg": "no kernel image found for the running release (/boot/vmlinuz-REL, /usr/lib/modules/REL/vmlinuz,"
                       " /vmlinuz): give one"}
    try:
        return {**planned(*plan_load(module, kho, Kexec(module, p["state_dir"]), p, lu)), "ok": True}
    except (KexecError, FinalizeError, host.NeedsRoot) as exc:  # refused_by: kho where KHO is not usable (require_kho)
        return {"ok": False, "kernel": p["kernel"], "initrd": p["initrd"], "msg": str(exc),
                "refused_by": "kho" if isinstance(exc, KhoInactive) else "load"}


def check_boot(kho, expected: str | None, refused: str | None = None) -> None:
    """Before anything changes: with expect_boot_id, refuse a host that is no longer on that boot; with
    the internal refuse_boot_id (the controller's own, which state=executed's action passes), a host on that boot."""
    if expected is not None and kho.boot_id() != expected:
        raise KexecError(f"the host is on boot {kho.boot_id()}, not the expected {expected} (expect_boot_id): it "
                         "rebooted since it was read; nothing was changed")
    if refused is not None and kho.boot_id() == refused:
        raise KexecError(f"the host is the controller itself (boot id {refused}): the jump would replace the kernel "
                         "this run executes on; nothing was changed")


def ensure_unloaded(module, kho, kexec: Kexec, staged_for: dict | None = None) -> dict:
    """state=unloaded; with ``staged_for`` (an owner: O(staged)), only a load still staged for that run."""
    record = kexec.read_record()
    result = {"previous": record, "loaded": False, "argv": [kexec.binary or "kexec", "-u"]}
    if staged_for is not None and not stage.mine(kexec.state_dir, staged_for, live=False):
        return {**result, "loaded": kho.kexec_loaded(), "changed": False,
                "msg": "no load is staged for this run (taken up, expired, or never staged): nothing unloaded"}
    if not kho.kexec_loaded():
        if not module.check_mode:
            kexec.forget()
        return {**result, "changed": False, "msg": "nothing is loaded"}
    if module.check_mode:
        return {**result, "changed": True, "msg": "would unload"}
    if not kexec.binary:
        raise KexecError("an image is loaded but kexec is not found on the host to unload it: install kexec-tools")
    kexec.unload()
    kexec.forget()
    if kho.kexec_loaded():
        raise KexecError("kexec -u returned 0 but /sys/kernel/kexec_loaded is still 1")
    return {**result, "changed": True, "msg": "unloaded"}
