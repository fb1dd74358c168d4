"""module_utils/_kho/host.py: the running kernel's files as KhoHost reads them (simulated trees), the kernel log, the
boot images per distribution family."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import simtree

from ansible_collections.kexec.kho.plugins.module_utils._kho import host, paths


def test_unmounted_debugfs(tmp_path, fixtures):
    opts = simtree.build("live-cold", tmp_path / "t")
    (tmp_path / "t" / "proc" / "mounts").write_text("sysfs /sys sysfs rw 0 0\n")
    kho = host.from_params(opts)
    assert kho.debugfs_mounted() is False


def kmsg_host(tmp_path, records: str) -> host.KhoHost:
    """A simulated live-cold host whose /dev/kmsg holds these records after its own."""
    opts = simtree.build("live-cold", tmp_path / "t")
    kmsg = tmp_path / "t" / "dev" / "kmsg"
    kmsg.write_text(kmsg.read_text() + records)
    return host.from_params(opts)


def test_only_the_kernels_own_records_are_its_word(tmp_path):
    """Issue 37, item 6: a process may write to /dev/kmsg (echo > /dev/kmsg, a unit with StandardOutput=kmsg); the
    kernel files such a record under a user facility (PRI >> 3 is never 0 then), and it is no word of the kernel's."""
    kho = kmsg_host(tmp_path, "14,90,900000,-;myapp[812]: Revived memory reservation 'oops' from KHO\n"
                              "12,91,910000,-;luo: Retrieved live update data, liveupdate number: 1\n"
                              "30,92,920000,-;systemd[1]: KHO handover unit started\n"
                              "6,93,930000,-;Revived memory reservation 'trace' from KHO\n SUBSYSTEM=memblock\n"
                              " DEVICE=+kho:x;6,1,1,-;KHO: a dictionary line is no record\n"
                              "4,94,940000,c,caller=T1;ramoops: using 0x100000@0x3eb00000, ecc: 0\n"
                              "6,x,950000,-;KHO: a malformed head\n")
    assert kho.kernel_log() == ["[    0.930000] Revived memory reservation 'trace' from KHO",
                                "[    0.940000] ramoops: using 0x100000@0x3eb00000, ecc: 0"]


def test_the_kernel_log_is_read_across_reads_and_bounded(tmp_path, monkeypatch):
    """A file (the simulated trees) gives many records a read, cut anywhere; what is kept is bounded."""
    filler = "".join(f"6,{n},{n},-;filler record {n:05d}\n" for n in range(2, 1000))
    kho = kmsg_host(tmp_path, filler + "".join(f"6,{n},{n},-;KHO: line {n}\n" for n in range(1000, 1010)))
    assert len(kho.kernel_log()) == 10 and kho.kernel_log()[-1] == "[    0.001009] KHO: line 1009"
    monkeypatch.setattr(host, "MAX_LOG_LINES", 3)
    assert kho.kernel_log() == [f"[    0.00{n}] KHO: line {n}" for n in (1000, 1001, 1002)]
    assert host.log_message("[    0.001009] KHO: line 1009") == "KHO: line 1009"
    assert host.log_message("KHO: no stamp") == "KHO: no stamp"


def test_read_bytes_reads_to_eof_and_refuses_huge(tmp_path):
    big = tmp_path / "blob"
    big.write_bytes(b"x" * 200_000)
    kho = host.KhoHost()
    assert len(kho.read_bytes(str(big))) == 200_000
    with pytest.raises(OSError, match="larger than"):
        kho.read_bytes(str(big), limit=100_000)
    assert kho.read_bytes(str(tmp_path / "missing")) is None


# Simulated /boot layouts (no EL image is reachable here): each release's files as the distribution names them.
LAYOUTS = {
    "debian": (["boot/vmlinuz-7.3.4", "boot/initrd.img-7.3.4", "vmlinuz"],
               {"kernel": "/boot/vmlinuz-7.3.4", "initrd": "/boot/initrd.img-7.3.4", "layout": "debian"}),
    "el": (["boot/vmlinuz-6.12.0-55.el10.x86_64", "boot/initramfs-6.12.0-55.el10.x86_64.img",
            "boot/initramfs-6.12.0-55.el10.x86_64kdump.img"],
           {"kernel": "/boot/vmlinuz-6.12.0-55.el10.x86_64", "initrd": "/boot/initramfs-6.12.0-55.el10.x86_64.img",
            "layout": "el"}),
    "bls": (["usr/lib/modules/6.12.0-55.el10.x86_64/vmlinuz", "boot/initramfs-6.12.0-55.el10.x86_64.img"],
            {"kernel": "/usr/lib/modules/6.12.0-55.el10.x86_64/vmlinuz",
             "initrd": "/boot/initramfs-6.12.0-55.el10.x86_64.img", "layout": "bls"}),
    "no initrd": (["boot/vmlinuz-7.3.4", "vmlinuz", "initrd.img"],
                  {"kernel": "/boot/vmlinuz-7.3.4", "initrd": None, "layout": "debian"}),
    "only /vmlinuz": (["vmlinuz"], {"kernel": "/vmlinuz", "initrd": None, "layout": "symlink"}),
    "nothing": ([], {"kernel": None, "initrd": None, "layout": None}),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_boot_images_per_distribution_family(tmp_path, layout):
    files, expected = LAYOUTS[layout]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    release = "6.12.0-55.el10.x86_64" if layout in ("el", "bls") else "7.3.4"
    assert host.boot_images(release, str(tmp_path)) == expected


class Detacher:
    """What host.detach asks of AnsibleModule: the binaries it finds, and commands as argument lists (setsid runs)."""

    def __init__(self, bins):
        self.bins, self.commands = bins, []

    def get_bin_path(self, name):
        return self.bins.get(name)

    def run_command(self, argv):
        assert isinstance(argv, list)  # never a shell string
        self.commands.append(argv)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("delay", [0, 1])
def test_a_detached_job_without_systemd_runs_in_its_own_session_after_its_delay(tmp_path, monkeypatch, delay):
    """The jump (no delay) and a staged load's expiry (its time to live) start the same way; setsid runs for real."""
    if not shutil.which("setsid"):
        pytest.skip("setsid (util-linux) is not on this machine")
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "no-systemd"))
    done = tmp_path / "done"
    mod = Detacher({"systemd-run": "/usr/bin/systemd-run", "setsid": shutil.which("setsid")})
    started = time.monotonic()
    argv = host.detach(mod, f"echo $$ > '{done}'", "run the job", delay=delay)
    assert argv[0] == shutil.which("setsid") and argv[1] == "-f" and ("sleep 1; " in argv[4]) is bool(delay)
    while not done.exists() and time.monotonic() - started < 15:
        time.sleep(0.05)
    assert done.exists() and time.monotonic() - started >= delay


def test_a_detached_job_with_systemd_is_one_transient_unit(tmp_path, monkeypatch):
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "systemd"))
    mod = Detacher({"systemd-run": shutil.which("true")})
    assert host.detach(mod, "kexec -u", "end it", delay=30)[1:] == ["--quiet", "--collect", "--on-active=30",
                                                                    "/bin/sh", "-c", "kexec -u"]
    assert host.detach(mod, "kexec -e", "jump")[1:] == ["--quiet", "--collect", "/bin/sh", "-c", "kexec -e"]


@pytest.mark.parametrize(("bins", "message"), [
    ({}, "neither systemd-run \\(with systemd running\\) nor setsid is on the host to end a staged load"),
    ({"setsid": "/bin/false"}, "false could not end a staged load \\(rc 1\\)"),
])
def test_a_job_that_cannot_be_detached_says_what(tmp_path, monkeypatch, bins, message):
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "no-systemd"))
    with pytest.raises(host.DetachError, match=message):
        host.detach(Detacher(bins), "true", "end a staged load", delay=5)
