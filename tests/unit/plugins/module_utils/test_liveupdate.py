"""Live update: the sessions and fd stores a host preserves, the jump method that keeps them, what came across."""

from __future__ import annotations

import os

import pytest
from receiver import SESSION, STORE, facts  # pylint: disable=import-error  # tests/: kho_facts' liveupdate facts

from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate as lu
from ansible_collections.kexec.kho.plugins.plugin_utils import _decode


@pytest.fixture
def luo_dir(fixtures):
    return fixtures / "liveupdate"


def proc_tree(tmp_path, links, unit="/system.slice/ssh.service"):
    """A /proc with the recorded fd links of the lab guest (pid fd target per line), and a /dev/liveupdate."""
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    dev.mkdir()
    (dev / "liveupdate").write_text("")
    for line in links:
        pid, fd, target = line.split(" ", 2)
        (proc / pid / "fd").mkdir(parents=True, exist_ok=True)
        (proc / pid / "comm").write_text("luo_kexec_simpl\n")
        (proc / pid / "cgroup").write_text(f"0::{unit}\n")
        os.symlink(target, proc / pid / "fd" / fd)
    (proc / "1" / "fd").mkdir(parents=True)
    os.symlink("/dev/null", proc / "1" / "fd" / "0")
    (proc / "self").mkdir()  # not a pid: skipped
    return str(proc), str(dev)


def test_sessions_are_read_from_proc_without_opening_the_device(tmp_path, luo_dir):
    links = (luo_dir / "proc_fd_links").read_text().splitlines()
    procfs, devfs = proc_tree(tmp_path, links + [f"212 3 {tmp_path}/dev/liveupdate"])
    held = lu.holders(procfs, devfs)
    assert sorted(held["sessions"], key=lambda s: s["name"]) == [
        {"name": "kexec_simple_state", "pid": 167, "comm": "luo_kexec_simpl", "unit": "ssh.service"},
        {"name": "test-session", "pid": 167, "comm": "luo_kexec_simpl", "unit": "ssh.service"},
    ]
    assert held["device_holders"] == [{"pid": 212, "comm": "luo_kexec_simpl", "unit": "ssh.service"}]
    assert held["truncated"] is False


def test_the_proc_scan_is_bounded(tmp_path, monkeypatch):
    procfs, devfs = proc_tree(tmp_path, [f"{100 + i} 3 anon_inode:[luo_session] s{i}" for i in range(5)])
    monkeypatch.setattr(lu, "MAX_LISTED", 3)
    held = lu.holders(procfs, devfs)
    assert len(held["sessions"]) == 3 and held["truncated"] is True


def test_systemctl_show_recorded_from_systemd_252_preserves_nothing(luo_dir):
    units = lu.parse_systemctl_show((luo_dir / "systemctl_show_252").read_text())
    assert len(units) > 10 and all(u["unit"].endswith(".service") for u in units)
    assert not [u for u in units if u["preserve"] == "yes" or u["luo_session"]]
    assert {"unit": "ssh.service", "active": "active", "preserve": None, "luo_session": None,
            "fd_store": 0} in units


def fake_systemctl(show, version="systemd 262 (262.1-1)", count="0", analyze=""):
    def run(argv):
        if argv[0] == "systemd-analyze":
            return (0, analyze, "") if analyze else (1, "", "Bootup is not yet finished")
        if argv[1] == "--version":
            return 0, version + "\n+PAM +AUDIT\n", ""
        if "KExecCount" in argv:
            return 0, count + "\n", ""
        return 0, show, ""
    return run


def test_systemd_262_recorded_after_a_kexec(luo_dir):
    """The sid guest (systemd 262.1) after `systemctl kexec`: journald, udevd and kho-cache.service preserve fd stores."""
    sd = lu.systemd(fake_systemctl((luo_dir / "systemctl_show_262").read_text(), count="1",
                                   analyze=(luo_dir / "systemd_analyze_time_262").read_text()))
    assert sd["version"] == 262 and sd["kexec_count"] == 1
    assert {u["unit"]: u["fd_store"] for u in sd["preserving_units"]} == {
        "systemd-journald.service": 6, "systemd-udevd.service": 1, "kho-cache.service": 1}
    assert sd["boot_phases"] == {"stopping": 3.825, "exit": 0.313, "systemd-shutdown": 0.676, "kernel": 12.018,
                                 "userspace": 178.735}
    assert lu.systemd(lambda argv: (127, "", "not found")) is None
    old = lu.systemd(fake_systemctl((luo_dir / "systemctl_show_252").read_text(), "systemd 252 (252.39-1~deb12u2)", ""))
    assert old["kexec_count"] is None and old["preserving_units"] == [] and old["boot_phases"] is None


def test_boot_phases_of_a_cold_boot():
    assert lu.boot_phases("Startup finished in 1.203s (kernel) + 2min 3.5s (userspace) = 2min 4.703s\n") == {
        "kernel": 1.203, "userspace": 123.5}
    assert lu.boot_phases("Bootup is not yet finished") is None and lu.seconds("") is None


@pytest.mark.parametrize(("state", "requested", "accept", "method"), [
    (facts(), "auto", (), "kexec"),
    (facts(sessions=[SESSION]), "auto", (), "kexec"),
    (facts(units=[STORE]), "auto", (), "systemctl"),
    (facts(sessions=[{**SESSION, "pid": 1}], units=[STORE]), "auto", (), "systemctl"),  # PID 1's own: systemd's
    (facts(sessions=[SESSION], units=[STORE]), "auto", ("fd_stores",), "kexec"),
    (facts(sessions=[SESSION], units=[STORE]), "auto", ("process_sessions",), "systemctl"),
    (facts(units=[STORE]), "kexec", ("fd_stores",), "kexec"),
    (facts(sessions=[SESSION]), "systemctl", ("process_sessions",), "systemctl"),
])
def test_the_method_that_keeps_what_is_preserved(state, requested, accept, method):
    chosen, accepted = lu.choose_method(state, requested, accept)
    assert chosen == method
    assert accepted == ([] if not lu.at_risk(state)[method] else [{"kexec": "fd_stores",
                                                                   "systemctl": "process_sessions"}[method]])


@pytest.mark.parametrize(("state", "requested", "message"), [
    (facts(sessions=[SESSION], units=[STORE]), "auto",
     r"no jump method keeps everything .* kexec -e would lose cache.service \(fd store: 1 fds\), systemctl kexec "
     r"would lose session test-session held by pid 167 \(luo_kexec_simpl, ssh.service\)"),
    (facts(units=[STORE]), "kexec", r"method kexec would lose cache.service .* accept_loss: \[fd_stores\]"),
    (facts(sessions=[SESSION]), "systemctl", r"method systemctl would lose session test-session .* "
                                             r"accept_loss: \[process_sessions\]"),
])
def test_a_method_that_would_lose_state_is_refused_naming_it(state, requested, message):
    with pytest.raises(lu.LossRefused, match=message):
        lu.choose_method(state, requested)


def test_bad_method_or_loss_names_the_valid_values():
    with pytest.raises(ValueError, match="method is 'reboot'; the valid values are auto, kexec, systemctl"):
        lu.choose_method(facts(), "reboot")
    with pytest.raises(ValueError, match="accept_loss has \\['everything'\\]"):
        lu.choose_method(facts(), "auto", ["everything"])


def test_the_outgoing_luo_entry_is_decoded_by_content(luo_dir):
    data = (luo_dir / "out_sub_fdts_LUO").read_bytes()
    rec = _decode.decode_blob(data, "LUO")
    assert rec["format"] == "luo"
    assert rec["luo"] == {"compatible": "luo-v5", "next_number": 1, "sessions": False, "flbs": True}
    assert _decode.decode_blob(b"\0" * 32, "LUO")["format"] == "binary"  # never labelled LUO by its name alone
    assert _decode.decode_blob(data, "something-else")["format"] == "luo"
    with pytest.raises(_decode.BlobError, match="LUO: 8 bytes"):
        _decode.decode_blob(data[:8], "LUO")


def test_the_incoming_luo_entry_is_consumed_not_decoded(luo_dir):
    import base64
    blob = base64.b64encode((luo_dir / "out_sub_fdts_LUO").read_bytes()).decode()
    facts_in, errors = _decode.decode_side({"fdt": None, "sub_blobs": {"LUO": blob}}, "in")
    assert facts_in["sub_blobs"]["LUO"]["format"] == "consumed" and "luo" not in facts_in["sub_blobs"]["LUO"]
    assert errors == []
    raw = {"byteorder": "little", "liveupdate": {"device": True}, "out": {"fdt": None, "sub_blobs": {"LUO": blob}},
           "in": {"fdt": None, "sub_blobs": {}}}
    assert _decode.facts_from_raw(raw)["liveupdate"]["outgoing"]["next_number"] == 1


def test_the_incoming_number_comes_from_the_kernel_log():
    log = ["[    0.61] KHO: exec from: 7.3.4 (count 1)",
           "[    0.70] luo: Retrieved live update data, liveupdate number: 2"]
    assert lu.incoming_number(log) == 2 and lu.incoming_number(log[:1]) is None and lu.incoming_number(None) is None


def test_a_composite_root_compatible_is_matched_on_its_kho_prefix():
    assert _decode.root_version("kho-v4;radix-v1") == 4 and _decode.root_version("kho-v4") == 4
    assert _decode.root_version("kho-v9") is None and _decode.root_version(None) is None


# ---------------------------------------------------------------- issue 37: live update, from the receiver


def test_the_kernels_liveupdate_lines_are_matched_whole_and_bounded():
    """Items 6 and 8: a message that merely contains the kernel's words is not its line; a number longer than
    %lld prints is not one (int() of 4,300 digits raised a bare ValueError)."""
    assert lu.incoming_number(["[ 9.0] myapp: luo: Retrieved live update data, liveupdate number: 1"]) is None
    assert lu.incoming_number(["luo: Retrieved live update data, liveupdate number: " + "9" * 5000]) is None
    assert lu.incoming_number(["[ 0.7] luo: Retrieved live update data, liveupdate number: 3"]) == 3
    failures = lu.restore_failures(["[ 9.0] app: luo: Failed to deserialize files for session [a] -ENOENT",
                                    "[ 9.1] luo: Failed to insert session [b] -EEXIST",
                                    "[ 9.2] luo: Failed to allocate session [c] during deserialization -ENOMEM",
                                    "[ 9.3] luo: Failed to deserialize files for session [d] -2"])
    assert failures == {"sessions": ["b", "c", "d"], "handlers": []}


def test_the_new_boot_says_whether_it_registered_the_device(tmp_path):
    """What the facts after the jump must carry: the kernel's own list of misc devices (/proc/misc), which has
    liveupdate only where LUO is on; the node under /dev is what a process opens."""
    procfs, devfs = proc_tree(tmp_path, [])
    assert lu.registered(procfs) is None  # no /proc/misc: unknown
    (tmp_path / "proc" / "misc").write_text(" 61 kvm\n183 hw_random\n")
    assert lu.registered(procfs) is False
    (tmp_path / "proc" / "misc").write_text(" 61 kvm\n122 liveupdate\n183 hw_random\n")
    state = lu.gather(devfs, procfs, "root=/dev/vda kho=on liveupdate=on", [], lambda argv: (127, "", ""))
    assert state["registered"] is True and state["device"] is True and state["param"] == "on"


SESSIONS_HELD = facts(sessions=[SESSION])


@pytest.mark.parametrize(("state", "target", "method", "accept", "words"), [
    (SESSIONS_HELD, "root=/dev/vda kho=on liveupdate=on", "kexec", (), None),
    (SESSIONS_HELD, "root=/dev/vda kho=on", "kexec", (), "the target command line has no liveupdate=on"),
    (SESSIONS_HELD, "root=/dev/vda kho=on liveupdate=off", "kexec", (), "no liveupdate=on"),
    (SESSIONS_HELD, "root=/dev/vda kho=on liveupdate", "kexec", (), "no liveupdate=on"),  # bare: kstrtobool refuses it
    (SESSIONS_HELD, "kho=on liveupdate=on liveupdate=bogus", "kexec", (), None),  # a bad value changes nothing
    (SESSIONS_HELD, "kho=off liveupdate=on", "kexec", (), "turns KHO off"),
    (SESSIONS_HELD, "root=/dev/vda kho=on", "kexec", ("process_sessions",), None),  # the loss accepted
    (SESSIONS_HELD, "root=/dev/vda kho=on", "systemctl", ("process_sessions",), None),  # lost by the method anyway
    (facts(units=[STORE]), "root=/dev/vda kho=on", "systemctl", (), "cache.service (fd store: 1 fds)"),
    (facts(), "root=/dev/vda kho=on", "kexec", (), None),  # nothing held
    (None, "root=/dev/vda kho=on", "kexec", (), None),  # no live update on this host
])
def test_preflight_refuses_a_target_that_could_not_hand_the_sessions_back(state, target, method, accept, words):
    why = lu.target_refusal(state, target, method, accept)
    if words is None:
        assert why is None, why
    else:
        assert words in why and "the new kernel would have no /dev/liveupdate" in why and "accept_loss" in why, why
        assert "session test-session held by pid 167" in why or "cache.service" in why, why


def test_a_target_line_without_liveupdate_is_refused_before_the_load_naming_the_sessions(tmp_path):
    """Through the load's own plan, as preflight and the jump's run make it: nothing is loaded."""
    from fakehost import FakeModule, make_host, params

    from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
    kho = make_host(tmp_path, "live-cold")  # its line has no liveupdate=on
    open(os.path.join(kho.devfs, "liveupdate"), "w").close()
    os.makedirs(os.path.join(kho.procfs, "167", "fd"))
    os.symlink("anon_inode:[luo_session] test-session", os.path.join(kho.procfs, "167", "fd", "5"))
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    with pytest.raises(K.KexecError, match=r"no liveupdate=on: .* give back session test-session held by pid 167"):
        K.ensure_loaded(mod, kho, kx, params(tmp_path))
    assert not [c for c in mod.commands if c[1:3] == ["-s", "-l"]] and not kho.kexec_loaded()
    refused = K.preflight(mod, kho, {"state_dir": str(tmp_path / "run")}, {"kernel": params(tmp_path)["kernel"]})
    assert refused["ok"] is False and "test-session" in refused["msg"]
    assert K.ensure_loaded(mod, kho, kx, params(tmp_path, append="liveupdate=on"))["loaded_here"] is True
