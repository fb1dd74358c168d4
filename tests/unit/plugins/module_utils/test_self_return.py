"""The host's own return ("commit confirmed", module_utils/_kho/self_return.py, #36): the armed script run under dash
in a temp tree laid out as the host's (procfs, debugfs with the recorded 7.3.4 kexec-metadata, the unit, its link),
with a fake kexec, sync and systemctl first on PATH that log their arguments.  Nothing here touches the real host."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths
from ansible_collections.kexec.kho.plugins.module_utils._kho import self_return as S

DASH = shutil.which("dash")
pytestmark = pytest.mark.skipif(DASH is None, reason="dash is not installed: the armed script is run under dash only")

OLD_BOOT = "4b1f3b0e-6c1d-4c47-9d4c-0d3c1c0e2a11"
NEW_BOOT = "9d0c2e4a-1b3c-4d5e-8f70-112233445566"
FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "kho-7.3.4"
SENT_BY_COLD = (FIXTURES / "cold" / "out_sub_fdts_kexec-metadata").read_bytes()  # 7.3.4, count 1
SENT_BY_SECOND = (FIXTURES / "handover1" / "out_sub_fdts_kexec-metadata").read_bytes()  # 7.3.4, count 2
LINE = "root=/dev/vda rw console=ttyS0 kho=on reserve_mem=1M:4096:oops ramoops.mem_name=oops kho_scratch=10%"
FAKE = """#!/bin/sh
printf '%s\\n' "${0##*/}" >> "$FAKE_LOG"
for a in "$@"; do printf '%s\\n' "$a"; done >> "$FAKE_LOG"
printf '%s\\n' "== end of call ==" >> "$FAKE_LOG"
case "$1" in
    -s) exit "${LOAD_RC:-0}" ;;
    -e|kexec) [ -n "${VANISH:-}" ] && kill -9 "$PPID"; exit "${JUMP_RC:-0}" ;;
esac
exit 0
"""


def armed(**kw) -> S.Armed:
    return S.Armed(**{"run_id": "0f3c9a7e5b2d4c1e8a6f9b0d2c4e6a8f", "old_boot_id": OLD_BOOT, "old_release": "7.3.4",
                      "new_release": "7.2.13", "kexec_count": 1, "timeout": 30, "kernel": "/boot/vmlinuz-7.3.4",
                      "initrd": "/boot/initrd.img-7.3.4", "cmdline": LINE, **kw})


class Box:
    """One host's tree, its fakes and the script's run."""

    def __init__(self, top: Path, boot_id=NEW_BOOT, release="7.2.13", metadata=SENT_BY_COLD, uptime="45.30 80.10"):
        self.top, self.where = top, S.Where.under(str(top / "host"))
        proc = Path(self.where.procfs)
        for rel, text in (("sys/kernel/random/boot_id", boot_id + "\n"), ("sys/kernel/osrelease", release + "\n"),
                          ("uptime", uptime + "\n")):
            (proc / rel).parent.mkdir(parents=True, exist_ok=True)
            (proc / rel).write_text(text)
        Path(self.where.devfs).mkdir(parents=True)
        (Path(self.where.devfs) / "kmsg").write_text("")
        kho = Path(self.where.debugfs) / paths.KHO
        kho.mkdir(parents=True)
        if metadata is not None:  # a boot that received a handover
            (kho / paths.KEXEC_METADATA).parent.mkdir(parents=True)
            (kho / paths.KEXEC_METADATA).write_bytes(metadata)
        self.bin, self.log = top / "bin", top / "fake.log"
        self.bin.mkdir()
        for name in ("kexec", "sync", "systemctl"):
            (self.bin / name).write_text(FAKE)
            (self.bin / name).chmod(0o755)

    def arm(self, a: S.Armed) -> list:
        return S.install(a, self.where)

    def env(self, **kw) -> dict:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_LOG": str(self.log), **kw}

    def start(self, **env) -> subprocess.Popen:
        script = f"{self.where.directory}/{paths.RETURN_SCRIPT}"
        return subprocess.Popen([DASH, script], env=self.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def run(self, **env) -> tuple:
        proc = self.start(**env)
        _out, err = proc.communicate(timeout=60)
        return proc.returncode, err

    def calls(self) -> list:
        """Each fake's argv, in order, its name first (where the script named it by a path, the name only)."""
        text = self.log.read_text() if self.log.exists() else ""
        # the end of a call is a line no argument of the script's can be (its words have no spaces): not "--", which
        # a command line may end with
        return [c.strip("\n").split("\n") for c in text.split("== end of call ==\n") if c.strip("\n")]

    def left(self) -> list:
        """What of the armed artefacts is on disk."""
        w = self.where
        return sorted(p for p in (w.unit, w.wants, w.directory, f"{w.directory}/{paths.RETURN_SCRIPT}")
                      if os.path.lexists(p))

    def kmsg(self) -> str:
        return (Path(self.where.devfs) / "kmsg").read_text()


def load_call(a: S.Armed) -> list:
    return ["kexec", "-s", "-l", a.kernel, f"--initrd={a.initrd}", f"--command-line={a.cmdline}"]


@pytest.fixture
def box(tmp_path) -> Box:
    return Box(tmp_path)


# ---------------------------------------------------------------- what is armed

def test_arming_writes_the_script_the_marker_the_unit_and_last_its_link(box):
    a = armed()
    written = box.arm(a)
    w = box.where
    assert written == [f"{w.directory}/{paths.RETURN_SCRIPT}", f"{w.directory}/{paths.RETURN_ARMED}", w.unit, w.wants]
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in written[:3]}
    assert list(modes.values()) == [0o700, 0o600, 0o644] and stat.S_IMODE(os.stat(w.directory).st_mode) == 0o700
    assert os.readlink(w.wants) == w.unit
    unit = Path(w.unit).read_text()
    for line in ("DefaultDependencies=no", "After=local-fs.target", f"RequiresMountsFor={w.directory} {w.debugfs}",
                 "Conflicts=shutdown.target", "IgnoreOnIsolate=yes", "Type=exec",
                 f"ExecStart=/bin/sh {w.directory}/{paths.RETURN_SCRIPT}", "WantedBy=sysinit.target"):
        assert line in unit.splitlines()
    assert subprocess.run([DASH, "-n", written[0]], check=False).returncode == 0


def test_the_real_paths_are_on_disk_never_under_run():
    """/run is the leaving kernel's tmpfs: what the next boot must find is under /var/lib and /etc."""
    w = S.Where()
    assert w.directory == "/var/lib/kexec-kho/return" and w.note == "/var/lib/kexec-kho/returned"
    assert w.unit == "/etc/systemd/system/kexec-kho-return.service"
    assert w.wants == "/etc/systemd/system/sysinit.target.wants/kexec-kho-return.service"
    assert not any(getattr(w, f).startswith("/run") for f in ("directory", "note", "unit", "wants"))


# ---------------------------------------------------------------- boots that are not this run's kexec

@pytest.mark.parametrize(("tree", "why"), [
    ({"metadata": None}, "no handover data under"),  # a cold boot: no kho/in
    ({"metadata": SENT_BY_SECOND}, "the kexec count is 2, not 1"),  # a later kexec, not this run's
    ({"metadata": SENT_BY_COLD.replace(b"7.3.4", b"7.1.0")}, "the previous kernel was 7.1.0, not 7.3.4"),
    ({"release": "7.3.4"}, "this kernel is 7.3.4, not 7.2.13"),  # the jump loaded another kernel
    ({"metadata": b"\x02" + SENT_BY_COLD[1:]}, "no kexec-metadata v1"),
    ({"metadata": SENT_BY_COLD[:40]}, "the kexec count is , not 1"),  # cut short: no count
])
def test_a_boot_that_is_not_this_runs_kexec_does_nothing_and_removes_everything(tmp_path, tree, why):
    box = Box(tmp_path, **tree)
    box.arm(armed())
    rc, err = box.run()
    assert rc == 0 and box.calls() == [] and box.left() == []
    assert why in err and "nothing done" in box.kmsg()
    assert not os.path.exists(box.where.note) and not os.path.exists(os.path.dirname(box.where.note))


def test_on_the_boot_that_armed_it_nothing_happens_and_it_stays_armed(tmp_path):
    box = Box(tmp_path, boot_id=OLD_BOOT, release="7.3.4", metadata=None)
    box.arm(armed())
    rc, err = box.run()
    assert rc == 0 and box.calls() == [] and len(box.left()) == 4 and "the boot that armed it" in err


# ---------------------------------------------------------------- this run's kexec

def test_not_confirmed_in_time_it_loads_the_recorded_kernel_and_jumps_back(box):
    a = armed(kexec="kexec")  # found on PATH: the fake
    box.arm(a)
    rc, err = box.run(VANISH="1")  # the jump is a process that never comes back
    assert box.calls() == [load_call(a), ["sync"], ["kexec", "-e"]]  # the load, a sync, the jump
    assert box.left() == [] and "returning to 7.3.4" in err
    note = S.read_note(box.where)
    assert note == {"run_id": a.run_id, "old_boot_id": OLD_BOOT, "new_boot_id": NEW_BOOT, "old_release": "7.3.4",
                    "new_release": "7.2.13", "timeout": 30, "state": "returning", "rc": None}
    assert S.confirm(box.where) is False  # too late: the script took the marker


def test_a_jump_back_that_returns_is_said_and_its_image_unloaded(box):
    a = armed(kexec=str(box.bin / "kexec"), initrd=None)  # the resolved binary, a kernel without initrd
    box.arm(a)
    rc, err = box.run(JUMP_RC="1")
    assert rc == 1 and box.calls() == [["kexec", "-s", "-l", a.kernel, f"--command-line={a.cmdline}"], ["sync"],
                                       ["kexec", "-e"], ["kexec", "-u"]]
    assert S.read_note(box.where)["state"] == "exit" and S.read_note(box.where)["rc"] == 1
    assert "the host stays on 7.2.13" in err and box.left() == []


def test_a_load_that_fails_stays_and_says_so(box):
    box.arm(armed())
    rc, _err = box.run(LOAD_RC="3")
    assert rc == 1 and [c[:2] for c in box.calls()] == [["kexec", "-s"]]  # no jump
    assert (S.read_note(box.where)["state"], S.read_note(box.where)["rc"]) == ("load-failed", 3)


def test_the_systemctl_method_asks_systemd_to_jump(box):
    box.arm(armed(method="systemctl"))
    box.run(VANISH="1")
    assert box.calls()[1:] == [["sync"], ["systemctl", "kexec"]]  # after the load


def test_a_confirm_in_time_wins_and_nothing_returns(tmp_path):
    box = Box(tmp_path, uptime="0.40 0.10")  # just booted: the wait is on
    box.arm(armed(timeout=20))
    proc = box.start()
    time.sleep(0.5)
    began = time.monotonic()
    assert S.confirm(box.where) is True
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and box.calls() == [] and box.left() == [] and "confirmed" in err
    assert time.monotonic() - began < 5  # seen within one of its 1 s rounds, not at the timeout
    assert S.read_note(box.where) is None and not os.path.exists(os.path.dirname(box.where.note))


def test_the_wait_ends_at_the_timeout_even_where_uptime_does_not_move(tmp_path):
    box = Box(tmp_path, uptime="0.40 0.10")  # a frozen uptime: its own count of rounds bounds the wait
    box.arm(armed(timeout=1))
    began = time.monotonic()
    box.run(VANISH="1")
    assert 0.9 < time.monotonic() - began < 10 and box.calls()[0][:3] == ["kexec", "-s", "-l"]


def test_disarm_removes_everything_armed_and_the_note_only_where_asked(box):
    box.arm(armed())
    removed = S.disarm(box.where)
    assert box.left() == [] and box.where.directory in removed
    assert not os.path.exists(os.path.dirname(box.where.note))
    assert S.disarm(box.where) == []  # twice: nothing more


# ---------------------------------------------------------------- refused at generation

@pytest.mark.parametrize(("field", "value"), [
    ("cmdline", "root=/dev/vda $(reboot)"), ("cmdline", "root=/dev/vda'; reboot; '"), ("cmdline", 'dyndbg="+p"'),
    ("cmdline", "quiet\nreboot"), ("cmdline", "quiet\treboot"), ("cmdline", ""), ("cmdline", "x" * 2048),
    ("kernel", "/boot/vmlinuz 7.3.4"), ("kernel", "boot/vmlinuz"), ("kernel", "/boot/../etc/shadow"),
    ("kernel", "/boot/vmlinuz-%n"), ("initrd", "/boot/initrd`id`"), ("old_release", "7.3.4;reboot"),
    ("new_release", ""), ("old_boot_id", OLD_BOOT.upper()), ("old_boot_id", OLD_BOOT + "\n"), ("run_id", "run one"), ("run_id", "run\n"), ("kexec", "kexec -u"),
    ("kexec", "/usr/sbin/../bin/kexec"), ("timeout", 0), ("timeout", True), ("timeout", 86401),
    ("kexec_count", 0), ("kexec_count", "1"), ("method", "reboot"),
])
def test_a_value_that_is_not_a_plain_word_is_refused_before_anything_is_written(box, field, value):
    with pytest.raises(S.Refused, match=f"^{field} (is|would be) "):
        box.arm(armed(**{field: value}))
    assert box.left() == [] and not os.path.exists(box.where.unit)


@pytest.mark.parametrize("where", [{"directory": "/"}, {"directory": "/return"}, {"unit": "/etc/x y.service"},
                                   {"debugfs": "sys/kernel/debug"}])
def test_paths_are_plain_too(where):
    with pytest.raises(S.Refused):
        S.script(armed(), S.Where(**where))


def test_the_writer_gate_refuses_what_no_check_should_have_passed():
    with pytest.raises(AssertionError, match="no check should have passed"):
        S.quote("it's")


WORD = st.text("ABCXYZabcxyz0189_.,:%+=/@-", min_size=1, max_size=24)


@settings(max_examples=40, deadline=None)
@example(words=["--"], spaces=[1] * 12, kernel=["0"])  # a line that ends with "--" (the fake's old separator)
@given(words=st.lists(WORD, min_size=1, max_size=12), spaces=st.lists(st.integers(1, 3), min_size=12, max_size=12),
       kernel=st.lists(st.text("abcXYZ019._+@-", min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
                       min_size=1, max_size=4))
def test_any_accepted_value_reaches_kexec_as_the_same_words(words, spaces, kernel):
    """Whatever passes the checks is one argument of the load, byte for byte (the line with its spaces made one)."""
    line = "".join(w + " " * n for w, n in zip(words, spaces)).rstrip()
    path = "/" + "/".join(kernel)
    a = armed(cmdline=line, kernel=path, initrd=path + ".img")
    with tempfile.TemporaryDirectory() as top:
        box = Box(Path(top))
        box.arm(a)
        box.run(VANISH="1")
        assert box.calls()[0] == ["kexec", "-s", "-l", path, f"--initrd={path}.img",
                                  f"--command-line={' '.join(words)}"]


# ---------------------------------------------------------------- the note

@pytest.mark.parametrize("text", [
    "", "r1 x y 7.3.4 7.2.13 30 returning", f"r1 {OLD_BOOT} {NEW_BOOT} 7.3.4 7.2.13 30 returned",
    f"r1 {OLD_BOOT} {NEW_BOOT} 7.3.4 7.2.13 30 returning 1", f"r1 {OLD_BOOT} {NEW_BOOT} 7.3.4 7.2.13 30 exit",
    f"r1 {OLD_BOOT} {NEW_BOOT} 7.3.4 7.2.13 30 exit 1\nmore",
])
def test_a_note_not_in_the_scripts_form_is_none(text):
    assert S.parse_note(text) is None


def test_a_note_of_a_boot_id_the_script_could_not_read():
    note = S.parse_note(f"r1 {OLD_BOOT} unknown 7.3.4 7.2.13 30 load-failed 2\n")
    assert note["new_boot_id"] is None and (note["state"], note["rc"]) == ("load-failed", 2)


# ---------------------------------------------------------------- the wiring: arm_for, confirmed, disarmed

LOADED = {"way_back": {"possible": True, "kernel": "/boot/vmlinuz-7.3.4", "initrd": "/boot/initrd.img-7.3.4",
                       "cmdline": "root=/dev/vda rw console=ttyS0", "release": "7.3.4", "why": "on disk"},
          "target": {"target_release": "7.2.13"}, "method": "systemctl", "interface": "live"}


def old_boot(tmp_path) -> Box:
    """The arming boot: its outgoing kexec-metadata says what it sends (7.3.4, count 1); systemd runs."""
    box = Box(tmp_path, boot_id=OLD_BOOT, release="7.3.4", metadata=None)
    out = Path(box.where.debugfs) / paths.KHO / paths.KEXEC_METADATA_OUT
    out.parent.mkdir(parents=True)
    out.write_bytes(SENT_BY_COLD)
    (tmp_path / "systemd").mkdir()
    return box


def test_arm_for_arms_what_the_next_boot_must_be_from_the_load_and_the_kernels_own_count(tmp_path):
    box = old_boot(tmp_path)
    got = S.arm_for(LOADED, "run-1", 45, OLD_BOOT, box.where, systemd=str(tmp_path / "systemd"))
    assert got["armed"] and (got["kexec_count"], got["old_release"], got["new_release"]) == (1, "7.3.4", "7.2.13")
    assert got["paths"][-1] == box.where.wants and len(box.left()) == 4
    script = Path(f"{box.where.directory}/{paths.RETURN_SCRIPT}").read_text()
    assert "count='1' timeout='45'" in script and "'systemctl' 'kexec'" in script
    assert "'--command-line=root=/dev/vda rw console=ttyS0 kho=on'" in script  # the load's own kho=on


@pytest.mark.parametrize(("change", "word"), [
    (lambda r, t: r["way_back"].update(possible=False, why="only /vmlinuz is on disk"), "only /vmlinuz is on disk"),
    (lambda r, t: r.update(interface="finalize"), "hands over at finalize"),
    (lambda r, t: os.rmdir(t / "systemd"), "systemd is not running here"),
    (lambda r, t: os.unlink(Path(S.Where.under(str(t / "host")).debugfs) / paths.KHO / paths.KEXEC_METADATA_OUT),
     "the count this kernel sends is unreadable"),
    (lambda r, t: r["way_back"].update(cmdline="root=/dev/vda init='/bin/sh -c x'"), "cmdline is"),
])
def test_arm_for_refuses_what_it_cannot_promise_before_writing_anything(tmp_path, change, word):
    box = old_boot(tmp_path)
    result = {**LOADED, "way_back": dict(LOADED["way_back"])}
    change(result, tmp_path)
    with pytest.raises(S.Refused) as info:
        S.arm_for(result, "run-1", 45, OLD_BOOT, box.where, systemd=str(tmp_path / "systemd"))
    assert word in str(info.value) and "nothing was armed" in str(info.value) and box.left() == []


def test_confirmed_wins_once_and_says_when_the_host_was_returning_already(box):
    box.arm(armed())
    assert S.present(box.where)[:2] == [box.where.wants, box.where.unit]
    got = S.confirmed(box.where)
    assert (got["confirmed"], got["returning"], got["changed"]) == (True, False, True) and box.left() == []
    assert S.confirmed(box.where) == {"changed": False, "confirmed": False, "returning": False, "note": None,
                                      "msg": "nothing was armed"}
    box.arm(armed())
    os.rename(f"{box.where.directory}/{paths.RETURN_ARMED}", f"{box.where.directory}/{paths.RETURN_RETURNING}")
    got = S.confirmed(box.where)
    assert (got["confirmed"], got["returning"]) == (False, True) and "too late" in got["msg"]


def test_disarmed_reads_the_note_and_leaves_nothing_on_disk(box):
    a = armed(kexec="kexec")
    box.arm(a)
    box.run(VANISH="1")  # returned by itself: the note is left for the controller
    got = S.disarmed(box.where)
    assert got["note"]["state"] == "returning" and got["note"]["run_id"] == a.run_id and got["changed"]
    assert S.present(box.where) == [] and not os.path.exists(os.path.dirname(box.where.note))
    assert S.disarmed(box.where)["changed"] is False


def test_a_confirm_after_the_script_took_the_return_says_returning_from_its_note(box):
    """The script drops its marker right after its note: the note alone says the confirm came too late (#36 review)."""
    a = armed(kexec="kexec")
    box.arm(a)
    box.run(VANISH="1")  # the script took the return: marker gone, note left
    got = S.confirmed(box.where)
    assert (got["confirmed"], got["returning"]) == (False, True) and got["note"]["run_id"] == a.run_id, got
    assert S.read_note(box.where) is None and S.present(box.where) == []
    assert not os.path.exists(os.path.dirname(box.where.note))  # nothing of it left, not even its directory


def test_a_confirm_after_a_failed_jump_back_says_so(box):
    box.arm(armed())
    box.run(LOAD_RC="3")
    got = S.confirmed(box.where)
    assert (got["confirmed"], got["returning"]) == (False, False) and "load-failed 3" in got["msg"], got


def test_systemctl_kexec_queued_keeps_the_image_loaded(box):
    """systemctl kexec returns once queued: no 'exit' note, no kexec -u under systemd's own jump."""
    box.arm(armed(method="systemctl"))
    rc, err = box.run()
    assert rc == 0 and box.calls()[1:] == [["sync"], ["systemctl", "kexec"]] and "queued" in err, box.calls()
    assert S.read_note(box.where)["state"] == "returning"
