"""kho_cmdline's pieces: request validation, GRUB/kernel-install/grubby backends, nothing lost."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import bootloader as B
from ansible_collections.kexec.kho.plugins.module_utils._kho import files
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import (
    GrammarError, apply_kho, check_request, kho_params, kho_signature,
)

GRUB = """# If you change this file, run 'update-grub' afterwards
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
EXTRA=pci=noaer
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0,115200 \\"acpi_osi=Windows 2020\\" $EXTRA"  # keep this comment
#GRUB_TERMINAL=console
"""


MKCONFIG = {"update-grub", "grub-mkconfig", "grub2-mkconfig"}
# grub.cfg as update-grub writes it on Debian: 10_linux's entries from the two variables, memtest86+'s of its own.
GRUB_CFG = """### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian {{
\tlinux\t/boot/vmlinuz-7.3.4 root=/dev/vda1 ro {linux} {default}
}}
submenu 'Advanced options for Debian GNU/Linux' {{
\tmenuentry 'Debian GNU/Linux, with Linux 7.3.4 (recovery mode)' {{
\t\tlinux\t/boot/vmlinuz-7.3.4 root=/dev/vda1 ro single {linux}
\t}}
}}
### END /etc/grub.d/10_linux ###
### BEGIN /etc/grub.d/20_memtest86+ ###
menuentry 'Memory test (memtest86+x64.bin)' {{
\tlinux16\t/boot/memtest86+x64.bin
}}
### END /etc/grub.d/20_memtest86+ ###
"""
MKCONFIG_SOURCES = ('. "$1" >/dev/null; for x in "${1%/*}"/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done >/dev/null; '
                    'printf "%s\\n%s" "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT"')


def mkconfig(grub_file: str, out: str) -> None:
    """What grub-mkconfig writes: its entries from the two variables as sh computes them after the defaults file and
    its drop-ins."""
    proc = subprocess.run(["/bin/sh", "-c", MKCONFIG_SOURCES, "sh", grub_file], capture_output=True, text=True,
                          check=True, env={"PATH": "/usr/bin:/bin"})
    linux, _nl, default = proc.stdout.partition("\n")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(GRUB_CFG.format(linux=linux, default=default))


@pytest.fixture(scope="module", autouse=True)
def boot(tmp_path_factory):
    """update-grub's grub.cfg, in a /boot of the tests' own."""
    root = tmp_path_factory.mktemp("boot")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(B.Grub, "grub_cfgs", (str(root / "grub2" / "grub.cfg"), str(root / "grub" / "grub.cfg")))
        yield root


class FakeModule:
    def __init__(self, tmp_path, bins=(), fail=(), **params):
        self.params = {"backup": False, "regenerate": True, "grub_cfg": None, "bootloader": "auto",
                       "grub_file": str(tmp_path / "grub"), "kernel_cmdline_file": str(tmp_path / "kcmd"),
                       "grubby_kernel": "ALL", "follow_symlinks": True, "grub_conflicts": "remove", **params}
        self.bins, self.fail, self.commands = set(bins), set(fail), []
        self.outputs: dict = {}
        self.fail_after = None  # fail the command after this many have run
        self.mkconfig = mkconfig  # what update-grub and grub-mkconfig write

    @staticmethod
    def selinux_enabled():
        return False

    def get_bin_path(self, name):
        return f"/usr/sbin/{name}" if name in self.bins else None

    def run_command(self, argv):
        assert isinstance(argv, list)
        self.commands.append(argv)
        name = os.path.basename(argv[0])
        if name in self.fail or self.fail_after is not None and len(self.commands) > self.fail_after:
            return 1, "", f"{name}: simulated failure"
        if name in MKCONFIG:
            self.mkconfig(self.params["grub_file"], argv[2] if len(argv) > 2 else B.Grub.grub_cfgs[-1])
        return 0, self.outputs.get(name, ""), ""


def edit_for(**request):
    wanted = check_request(**{"kho": "on", **request})
    return (lambda line: apply_kho(line, "present", wanted["kho"], wanted["scratch"], "auto", wanted["reserve_mem"]),
            lambda line: apply_kho(line, "absent"))


def write(backend, **request):
    """Plan and apply, as the module does."""
    plan = backend.plan(*edit_for(**request))
    return plan, backend.apply(plan) if plan["files"] or plan.get("commands") else None


def test_request_validation_names_value_and_form():
    with pytest.raises(GrammarError, match="quote it: kho: 'on'"):
        check_request(kho=True)
    with pytest.raises(GrammarError, match="not a kernel boolean"):
        check_request(kho="maybe")
    with pytest.raises(GrammarError, match="three sizes LOWMEM,GLOBAL,PERNODE"):
        check_request(scratch="16M,512M")
    with pytest.raises(GrammarError, match=r"reserve_mem\[1\].label 'a' is used twice"):
        check_request(reserve_mem=[{"size": "1M", "align": 0, "label": "a"}] * 2)
    with pytest.raises(GrammarError, match="at most 8"):
        check_request(reserve_mem=[{"size": "1M", "align": 0, "label": f"r{i}"} for i in range(9)])
    with pytest.raises(GrammarError, match=r"reserve_mem\[0\].size '1Q' is not a size"):
        check_request(reserve_mem=[{"size": "1Q", "align": 0, "label": "a"}])
    with pytest.raises(GrammarError, match="YAML boolean"):
        check_request(reserve_mem=[{"size": True, "align": 0, "label": "a"}])
    ok = check_request(kho="y", scratch="050%", reserve_mem=[{"size": "0x100000", "align": 4096, "label": "oops"}])
    assert ok == {"kho": "on", "scratch": "50%", "reserve_mem": [{"size": "1M", "align": "4K", "label": "oops"}]}
    assert check_request(kho="Disable", scratch="16777216,0x20000000,256m")["scratch"] == "16M,512M,256M"
    assert check_request(kho="Disable")["kho"] == "off"


HOSTILE = [
    ({"kho": "1 init=/bin/sh"}, "kho '1 init=/bin/sh' is not a kernel boolean; use on or off"),
    ({"kho": "on$(id)"}, "kho 'on$(id)' is not a kernel boolean"),
    ({"kho": 'on";id;"'}, "is not a kernel boolean"),
    ({"kho": "on\nGRUB_X=1"}, "is not a kernel boolean"),
    ({"reserve_mem": [{"size": "1M", "align": 4096, "label": "$(id>/x)"}]},
     r"reserve_mem[0].label '$(id>/x)' is not a label the collection writes; the form is 1 to 15 of A-Z"),
    ({"reserve_mem": [{"size": "1M", "align": 4096, "label": "a`id`"}]}, "is not a label"),
    ({"reserve_mem": [{"size": "1M;id", "align": 4096, "label": "a"}]}, "reserve_mem[0].size '1M;id' is not a size"),
    ({"reserve_mem": [{"size": "1M", "align": "4K b", "label": "a"}]}, "reserve_mem[0].align '4K b' is not a size"),
    ({"reserve_mem": [{"size": "16E", "align": 0, "label": "a"}]}, "does not fit in 64 bits"),
    ({"scratch": "16M,512M,256M;id"}, "is not a size"),
    ({"scratch": "50% x"}, "is not a scratch size"),
]


@pytest.mark.parametrize(("request_", "message"), HOSTILE)
def test_hostile_values_are_refused_naming_option_value_and_form(request_, message):
    with pytest.raises(GrammarError) as info:
        check_request(**request_)
    assert message in str(info.value)


# Values as a user (or an inventory a hostile party edits) could send them: mostly well-formed, each
# possibly with hostile text around it, so that both branches of the property are exercised.
HOSTILE_TEXT = st.text(alphabet="0123456789xXkKmMgG%,:$`;|&<>(){}[]\\ \"'\n\tyesnofx=", max_size=6) | \
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
NUMBER = st.builds("{}{}".format, st.integers(0, 1 << 20), st.sampled_from(["", "K", "M", "G", "k", "m"])) | \
    st.integers(1, 1 << 40).map(hex) | st.integers(1, 1 << 30)


def hostile(valid):
    return valid | st.builds("{}{}{}".format, HOSTILE_TEXT, valid, HOSTILE_TEXT)


KHO_VALUE = hostile(st.sampled_from(["on", "off", "Y", "no", "1", "0", "TRUE", "disable"]))
SIZE_VALUE = hostile(NUMBER)
PERCENT = st.builds("{}%".format, st.integers(0, 1000))
SCRATCH_VALUE = hostile(PERCENT | st.builds("{},{},{}".format, NUMBER, NUMBER, NUMBER))
LABEL_VALUE = hostile(st.from_regex(r"[A-Za-z0-9_.+-]{1,15}", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(kho=KHO_VALUE, scratch=SCRATCH_VALUE, size=SIZE_VALUE, align=SIZE_VALUE, label=LABEL_VALUE)
def test_any_value_is_refused_or_renders_a_file_that_sh_sources_inertly(
        tmp_path_factory, kho, scratch, size, align, label):
    """Every accepted value: /bin/sh sources the file with no side effect and reads back the same parameters."""
    request = {"kho": kho, "scratch": scratch, "reserve_mem": [{"size": size, "align": align, "label": label}]}
    try:
        wanted = check_request(**request)
    except GrammarError:
        event("refused")
        return
    event("accepted")
    tmp = tmp_path_factory.mktemp("grub")
    (tmp / "grub").write_text(GRUB)
    mod = FakeModule(tmp, bins={"update-grub"}, regenerate=False)
    write(B.Grub(mod, str(tmp / "grub"), None), **request)
    proc = subprocess.run(["/bin/sh", "-c", '. ./grub; printf %s "$GRUB_CMDLINE_LINUX"'], cwd=tmp,
                          capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.stderr == "" and sorted(p.name for p in tmp.iterdir()) == ["grub"]  # nothing ran, nothing made
    got = kho_params(proc.stdout)
    assert got["invalid"] == [] and got["kho_enabled"] == (wanted["kho"] == "on")
    assert got["scratch"]["value"] == wanted["scratch"]
    assert [r["value"] for r in got["reserve_mem"]] == [f"{r['size']}:{r['align']}:{r['label']}"
                                                        for r in wanted["reserve_mem"]]


MODULE = [sys.executable, "-m", "ansible_collections.kexec.kho.plugins.modules.kho_cmdline"]


def run_module(tmp_path: Path, args: dict, bin_dir: Path | None = None) -> dict:
    """The real module, as Ansible runs it: one process, its arguments in a file; ``bin_dir`` first on its PATH."""
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": False, **args}}))
    root = Path(B.__file__).resolve().parents[6]
    path = f"{bin_dir}:{os.environ['PATH']}" if bin_dir else os.environ["PATH"]
    proc = subprocess.run([*MODULE, str(argfile)], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(root), "PATH": path})
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("request_", "message"), HOSTILE[:6])
def test_the_module_refuses_hostile_values_before_touching_the_file(tmp_path, request_, message):
    grub = tmp_path / "grub"
    grub.write_text(GRUB)
    before = grub.read_bytes()
    out = run_module(tmp_path, {"bootloader": "grub", "grub_file": str(grub), "regenerate": False, **request_})
    assert out["failed"] and message in out["msg"], out
    assert grub.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["args.json", "grub"]


def test_apply_kho_and_reboot_signature():
    line = "root=/dev/sda kho_bootmem=10% quiet"
    after = apply_kho(line, "present", "on", "20%", "auto", [{"size": "1M", "align": "4K", "label": "oops"}])
    assert after == "root=/dev/sda kho_bootmem=20% quiet kho=on reserve_mem=1M:4K:oops"
    forced = apply_kho(after, "present", None, "20%", "kho_scratch", None)
    assert "kho_bootmem" not in forced and "kho_scratch=20%" in forced
    assert apply_kho(after, "absent") == "root=/dev/sda quiet"
    assert kho_signature("kho=on reserve_mem=1M:0:a") == kho_signature("kho=1 reserve_mem=0x100000:64:a")
    assert kho_signature("kho=on") != kho_signature("kho=off")


def test_same_meaning_safely_spelled_is_kept_anything_else_is_rewritten():
    regions = [{"size": "1M", "align": "4K", "label": "oops"}]
    kept = "kho=1 reserve_mem=1048576:4096:oops"
    assert apply_kho(kept, "present", "on", None, "auto", regions) == kept  # idempotent across spellings
    assert apply_kho("kho=on$(id)", "present", "on") == "kho=on"
    assert apply_kho("kho=on a kho=on", "present", "on") == "kho=on a"  # a repeated kho= collapses
    assert apply_kho("reserve_mem=1M:4096:oops;x", "present", "on", None, "auto", regions) == \
        "reserve_mem=1M:4K:oops kho=on"


def test_grub_edit_keeps_everything_else(tmp_path):
    mod = FakeModule(tmp_path, bins={"update-grub"})
    (tmp_path / "grub").write_text(GRUB)
    os.chmod(tmp_path / "grub", 0o640)
    grub = B.Grub(mod, str(tmp_path / "grub"), None)
    plan, res = write(grub, reserve_mem=[{"size": "1M", "align": 4096, "label": "oops"}])
    assert plan["before"] == 'console=ttyS0,115200 "acpi_osi=Windows 2020" pci=noaer quiet'
    assert plan["after"] == 'console=ttyS0,115200 "acpi_osi=Windows 2020" pci=noaer kho=on reserve_mem=1M:4K:oops quiet'
    text = (tmp_path / "grub").read_text()
    assert text == GRUB.replace('$EXTRA"', '$EXTRA kho=on reserve_mem=1M:4K:oops"')
    assert stat.S_IMODE(os.stat(tmp_path / "grub").st_mode) == 0o640
    assert res["regenerated"] == [["/usr/sbin/update-grub"]] and res["backup_files"] == {}
    assert write(grub, reserve_mem=[{"size": "1M", "align": 4096, "label": "oops"}])[1] is None  # idempotent


def test_grub_without_the_variable_and_single_quotes(tmp_path):
    mod = FakeModule(tmp_path, bins={"grub2-mkconfig"}, grub_cfg=str(tmp_path / "grub.cfg"))
    (tmp_path / "grub").write_text("GRUB_TIMEOUT=1")
    grub = B.Grub(mod, str(tmp_path / "grub"), str(tmp_path / "grub.cfg"))
    plan, res = write(grub)
    assert plan["before"] == "" and (tmp_path / "grub").read_text() == 'GRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX="kho=on"\n'
    assert res["regenerated"] == [["/usr/sbin/grub2-mkconfig", "-o", str(tmp_path / "grub.cfg")]]
    (tmp_path / "grub").write_text("GRUB_CMDLINE_LINUX='ro quiet'\n")
    write(grub)
    assert (tmp_path / "grub").read_text() == "GRUB_CMDLINE_LINUX='ro quiet kho=on'\n"


def test_grub_judges_the_effective_line_and_removes_conflicts(tmp_path):
    """_DEFAULT comes last on the kernel's line; drop-ins are sourced after the main file."""
    (tmp_path / "grub").write_text('GRUB_CMDLINE_LINUX="kho=on ro"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet kho=off"\n')
    (tmp_path / "grub.d").mkdir()
    dropin = tmp_path / "grub.d" / "50-cloudimg.cfg"
    dropin.write_text('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT console=ttyS0 reserve_mem=2M:4K:old"\n')
    os.chmod(dropin, 0o600)
    mod = FakeModule(tmp_path, bins={"update-grub"})
    grub = B.Grub(mod, str(tmp_path / "grub"), None)
    plan = grub.plan(*edit_for())
    assert plan["before"] == "kho=on ro quiet kho=off console=ttyS0 reserve_mem=2M:4K:old"
    assert kho_params(plan["before"])["kho_enabled"] is False  # what the kernel would see: not what was asked
    assert [(Path(c["file"]).name, c["line"], c["variable"], c["parameters"]) for c in plan["conflicts"]] == [
        ("grub", 2, "GRUB_CMDLINE_LINUX_DEFAULT", ["kho=off"]),
        ("50-cloudimg.cfg", 1, "GRUB_CMDLINE_LINUX_DEFAULT", ["reserve_mem=2M:4K:old"])]
    assert plan["after"] == "kho=on ro quiet console=ttyS0"
    res = grub.apply(plan)
    assert dropin.read_text() == 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT console=ttyS0"\n'
    backup = Path(res["backup_files"][str(dropin)])  # every other file touched is backed up
    assert b"reserve_mem=2M:4K:old" in backup.read_bytes() and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert grub.plan(*edit_for())["files"] == {}
    absent = grub.plan(lambda line: apply_kho(line, "absent"), lambda line: apply_kho(line, "absent"))
    assert absent["after"] == "ro quiet console=ttyS0"


def test_grub_writes_the_assignment_that_wins(tmp_path):
    """A drop-in that reassigns GRUB_CMDLINE_LINUX wins over the main file: the parameters go there."""
    (tmp_path / "grub").write_text('GRUB_CMDLINE_LINUX="ro"\n')
    (tmp_path / "grub.d").mkdir()
    (tmp_path / "grub.d" / "90-x.cfg").write_text('GRUB_CMDLINE_LINUX="console=ttyS0"\n')
    plan, _res = write(B.Grub(FakeModule(tmp_path, bins={"update-grub"}), str(tmp_path / "grub"), None))
    assert plan["target"] == str(tmp_path / "grub.d" / "90-x.cfg") and plan["after"] == "console=ttyS0 kho=on"
    assert (tmp_path / "grub").read_text() == 'GRUB_CMDLINE_LINUX="ro"\n'


def test_grub_symlink_is_followed_never_replaced(tmp_path):
    real = tmp_path / "real-grub"
    real.write_text(GRUB)
    (tmp_path / "grub").symlink_to(real)
    write(B.Grub(FakeModule(tmp_path, bins={"update-grub"}, backup=True), str(tmp_path / "grub"), None))
    assert (tmp_path / "grub").is_symlink() and "kho=on" in real.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith("~")][0].startswith("real-grub.")
    refused = B.Grub(FakeModule(tmp_path, follow_symlinks=False), str(tmp_path / "grub"), None)
    with pytest.raises(files.Refused, match="is a symbolic link to .*real-grub; set follow_symlinks"):
        refused.plan(*edit_for())


def test_grub_cfg_check_names_entries_without_the_parameters(tmp_path):
    cfg = tmp_path / "grub.cfg"
    cfg.write_text("menuentry 'Debian' {\n  linux /vmlinuz root=/dev/vda1 ro kho=on\n}\n"
                   "menuentry 'Debian, old' {\n  linux /vmlinuz-old root=/dev/vda1 ro\n}\n")
    grub = B.Grub(FakeModule(tmp_path, bins={"grub-mkconfig"}, grub_cfg=str(cfg)), str(tmp_path / "grub"), str(cfg))
    grub.regenerate_argv()
    assert grub.check_cfg("ro kho=on") == {"path": str(cfg), "entries": 2, "missing": ["Debian, old"]}


def test_grub_cfg_check_counts_the_entries_built_from_the_variables_only(tmp_path):
    """memtest86+, os-prober and 40_custom write linux lines of their own, which GRUB_CMDLINE_LINUX never reaches."""
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(GRUB_CFG.format(linux="ro kho=on", default="quiet") + "### BEGIN /etc/grub.d/30_os-prober ###\n"
                   "menuentry 'Fedora (on /dev/vdb1)' {\n\tlinux /vmlinuz root=/dev/vdb1\n}\n### END /etc/grub.d/30_os-prober ###\n")
    grub = B.Grub(FakeModule(tmp_path, bins={"grub-mkconfig"}, grub_cfg=str(cfg)), str(tmp_path / "grub"), str(cfg))
    grub.regenerate_argv()
    assert grub.check_cfg("ro kho=on quiet") == {"path": str(cfg), "entries": 2, "missing": []}
    assert grub.check_cfg("ro kho=on quiet reserve_mem=1M:4K:oops")["missing"] == [
        "Debian GNU/Linux", "Debian GNU/Linux, with Linux 7.3.4 (recovery mode)"]


def lacking(grub_file: str, out: str) -> None:  # pylint: disable=unused-argument
    """A regeneration whose entries do not get the parameters (a script in /etc/grub.d that builds its own line)."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(GRUB_CFG.format(linux="ro", default="quiet"))


@pytest.mark.parametrize(("generate", "why"), [
    (lacking, "has entries whose linux line lacks the KHO parameters asked for (kho=on reserve_mem=1M:4K:oops): Debian "
              "GNU/Linux, Debian GNU/Linux, with Linux 7.3.4 (recovery mode); a script in /etc/grub.d"),
    (lambda grub_file, out: Path(out).write_text("### BEGIN /etc/grub.d/10_linux ###\n### END /etc/grub.d/10_linux ###\n"),
     "has no linux line from /etc/grub.d/10_linux, so nothing shows that a kernel gets the KHO parameters"),
    (lambda grub_file, out: Path(out).unlink(), "wrote no {cfg}, so nothing shows that the boot entries carry"),
], ids=["lacking", "no-entry", "no-file"])
def test_a_regenerated_grub_cfg_without_the_parameters_fails_and_every_file_is_put_back(tmp_path, generate, why):
    (tmp_path / "grub").write_text(GRUB)
    (tmp_path / "grub.d").mkdir()
    dropin = tmp_path / "grub.d" / "50-x.cfg"
    dropin.write_text('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT kho=off"\n')
    cfg = tmp_path / "boot" / "grub.cfg"
    cfg.parent.mkdir()
    cfg.write_text("# grub.cfg as the last good regeneration left it\n")
    mod = FakeModule(tmp_path, bins={"grub-mkconfig"}, grub_cfg=str(cfg))
    mod.mkconfig = generate
    grub = B.Grub(mod, str(tmp_path / "grub"), str(cfg))
    with pytest.raises(B.BootloaderError) as info:
        write(grub, reserve_mem=[{"size": "1M", "align": 4096, "label": "oops"}])
    assert why.format(cfg=cfg) in str(info.value)
    assert str(info.value).endswith(f"{tmp_path}/grub, {dropin} restored as it was: every file is as it was, and {cfg} "
                                    "put back as it was")
    assert (tmp_path / "grub").read_text() == GRUB and "kho=off" in dropin.read_text()
    assert cfg.read_text() == "# grub.cfg as the last good regeneration left it\n"


def test_a_grub_cfg_that_cannot_be_read_is_refused_before_any_write(tmp_path):
    (tmp_path / "grub").write_text(GRUB)
    cfg = tmp_path / "grub.cfg"
    cfg.mkdir()
    grub = B.Grub(FakeModule(tmp_path, bins={"grub-mkconfig"}, grub_cfg=str(cfg)), str(tmp_path / "grub"), str(cfg))
    with pytest.raises(B.BootloaderError, match=f"^{cfg} cannot be read \\(Is a directory\\); set grub_cfg to the grub.cfg"):
        write(grub)
    assert (tmp_path / "grub").read_text() == GRUB and grub.module.commands == []


def test_the_real_module_fails_when_grub_cfg_lacks_the_parameters_and_puts_every_file_back(tmp_path):
    """The module, with a grub2-mkconfig whose entries never get the parameters: failed, not a warning (#37)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "grub2-mkconfig").write_text("#!/bin/sh\nprintf '### BEGIN /etc/grub.d/10_linux ###\\nmenuentry \"Debian\" {\\n"
                                            "\\tlinux /vmlinuz root=/dev/vda1 ro quiet\\n}\\n### END /etc/grub.d/10_linux ###\\n'"
                                            " >\"$2\"\n")
    (bin_dir / "grub2-mkconfig").chmod(0o755)
    grub, cfg = tmp_path / "grub", tmp_path / "grub.cfg"
    grub.write_text(GRUB)
    cfg.write_text("old\n")
    out = run_module(tmp_path, {"bootloader": "grub", "grub_file": str(grub), "grub_cfg": str(cfg)}, bin_dir)
    assert out.get("failed") and out["msg"].startswith(
        f"the regenerated {cfg} has entries whose linux line lacks the KHO parameters asked for (kho=on): Debian; "), out
    assert out["msg"].endswith(f"{grub} restored as it was: every file is as it was, and {cfg} put back as it was")
    assert grub.read_text() == GRUB and cfg.read_text() == "old\n"


def test_the_writer_gate_refuses_what_no_validator_should_have_passed(tmp_path):
    (tmp_path / "grub").write_text(GRUB)
    grub = B.Grub(FakeModule(tmp_path, bins={"update-grub"}), str(tmp_path / "grub"), None)
    plan = grub.plan(lambda line: line + " kho=on;id", lambda line: line)  # a validator bug, simulated
    with pytest.raises(AssertionError, match=r"kexec.kho bug: refusing to write the token 'kho=on;id'"):
        grub.apply(plan)
    assert (tmp_path / "grub").read_text() == GRUB
    with pytest.raises(B.BootloaderError, match=r"rewritten files would not be read as planned: .*grub line 6 .*\$\("):
        grub.plan(lambda line: line + " kho=on$(id)", lambda line: line)  # caught sooner: sh would run it
    with pytest.raises(GrammarError, match="COMMAND_LINE_SIZE"):
        grub.plan(lambda line: line + " kho_scratch=" + "1," * 1100, lambda line: line)


def test_grub_unterminated_quote_is_an_error(tmp_path):
    (tmp_path / "grub").write_text('GRUB_CMDLINE_LINUX="ro\n')
    with pytest.raises(B.BootloaderError, match="unterminated"):
        B.Grub(FakeModule(tmp_path), str(tmp_path / "grub"), None).plan(*edit_for())


def test_failed_regeneration_restores_every_file_byte_for_byte(tmp_path):
    mod = FakeModule(tmp_path, bins={"update-grub"}, fail={"update-grub"}, backup=True)
    (tmp_path / "grub").write_bytes(GRUB.encode())
    os.chmod(tmp_path / "grub", 0o600)
    (tmp_path / "grub.d").mkdir()
    dropin = tmp_path / "grub.d" / "x.cfg"
    dropin.write_text('GRUB_CMDLINE_LINUX_DEFAULT="kho=off"\n')
    grub = B.Grub(mod, str(tmp_path / "grub"), None)
    with pytest.raises(B.BootloaderError, match="restored as it was"):
        write(grub)
    assert (tmp_path / "grub").read_bytes() == GRUB.encode()
    assert dropin.read_text() == 'GRUB_CMDLINE_LINUX_DEFAULT="kho=off"\n'
    (backup,) = [p for p in tmp_path.iterdir() if p.name.startswith("grub.") and p.name.endswith("~")]
    assert backup.read_bytes() == GRUB.encode()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # never more readable than the original
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".grub.")] == []  # no temp files left


def test_no_regeneration_tool_is_refused_before_writing(tmp_path):
    mod = FakeModule(tmp_path)
    (tmp_path / "grub").write_text(GRUB)
    with pytest.raises(B.BootloaderError, match="install GRUB's tools"):
        write(B.Grub(mod, str(tmp_path / "grub"), None))
    assert (tmp_path / "grub").read_text() == GRUB


def test_kernel_install_backend(tmp_path, monkeypatch):
    mod = FakeModule(tmp_path, bins={"kernel-install"})
    ki = B.KernelInstall(mod, str(tmp_path / "kcmd"), "BOOT_IMAGE=/vmlinuz initrd=/x root=/dev/sda rw")
    assert ki.read() == "root=/dev/sda rw"  # no file yet: the running line, as kernel-install does
    monkeypatch.setattr(B.glob, "glob", lambda pattern: ["/usr/lib/modules/7.3.4/vmlinuz"])
    _plan, res = write(ki)
    assert (tmp_path / "kcmd").read_text() == "root=/dev/sda rw kho=on\n"
    assert res["regenerated"] == [["/usr/sbin/kernel-install", "add", "7.3.4", "/usr/lib/modules/7.3.4/vmlinuz"]]


def test_kernel_install_failure_removes_a_file_it_created(tmp_path, monkeypatch):
    mod = FakeModule(tmp_path, bins={"kernel-install"}, fail={"kernel-install"})
    monkeypatch.setattr(B.glob, "glob", lambda pattern: ["/usr/lib/modules/7.3.4/vmlinuz"])
    with pytest.raises(B.BootloaderError):
        write(B.KernelInstall(mod, str(tmp_path / "kcmd"), "root=/dev/sda"))
    assert not (tmp_path / "kcmd").exists()


def test_kernel_install_failure_regenerates_the_entries_already_done_from_the_restored_file(tmp_path, monkeypatch):
    (tmp_path / "kcmd").write_text("root=/dev/sda\n")
    mod = FakeModule(tmp_path, bins={"kernel-install"})
    mod.fail_after = 1  # the first kernel's entry is regenerated, the second fails, then all fail
    monkeypatch.setattr(B.glob, "glob", lambda pattern: ["/usr/lib/modules/7.2/vmlinuz", "/usr/lib/modules/7.3/vmlinuz"])
    with pytest.raises(B.BootloaderError, match="the boot entries of 7.2 could not be regenerated back and now differ"):
        write(B.KernelInstall(mod, str(tmp_path / "kcmd"), "root=/dev/sda"))
    assert (tmp_path / "kcmd").read_text() == "root=/dev/sda\n"
    mod = FakeModule(tmp_path, bins={"kernel-install"})
    mod.run_command = lambda argv, _orig=mod.run_command: (1, "", "x") if argv[2] == "7.3" else _orig(argv)
    with pytest.raises(B.BootloaderError, match="and the entries of 7.2 regenerated from it"):
        write(B.KernelInstall(mod, str(tmp_path / "kcmd"), "root=/dev/sda"))


# Recorded from `grubby --info=ALL` on Fedora 41 (grubby 8.40): grubby is not packaged by Debian.
GRUBBY_INFO = """index=0
kernel="/boot/vmlinuz-6.12.5-200.fc41.x86_64"
args="ro rootflags=subvol=root rhgb quiet kho=off reserve_mem=2M:4096:old"
root="UUID=2c1b9c5a-8d3e-4d0a-9b39-6d1c2f0e3a11"
initrd="/boot/initramfs-6.12.5-200.fc41.x86_64.img"
title="Fedora Linux (6.12.5-200.fc41.x86_64) 41 (Forty One)"
id="a1b2c3d4e5f6-6.12.5-200.fc41.x86_64"
"""
# A second entry, in the same form, whose arguments already say what is asked.
GRUBBY_SECOND = """index=1
kernel="/boot/vmlinuz-6.11.4-301.fc41.x86_64"
args="ro rootflags=subvol=root rhgb quiet kho=on reserve_mem=1M:4K:oops"
root="UUID=2c1b9c5a-8d3e-4d0a-9b39-6d1c2f0e3a11"
initrd="/boot/initramfs-6.11.4-301.fc41.x86_64.img"
title="Fedora Linux (6.11.4-301.fc41.x86_64) 41 (Forty One)"
id="a1b2c3d4e5f6-6.11.4-301.fc41.x86_64"
"""


def test_grubby_judges_and_updates_every_entry(tmp_path):
    mod = FakeModule(tmp_path, bins={"grubby"})
    mod.outputs["grubby"] = GRUBBY_SECOND + GRUBBY_INFO.replace("index=0", "index=2")
    backend = B.select(mod, "")
    assert backend.name == "grubby"
    regions = [{"size": "1M", "align": 4096, "label": "oops"}]
    plan = backend.plan(*edit_for(reserve_mem=regions))
    assert [(e["index"], e["changed"]) for e in plan["entries"]] == [("1", False), ("2", True)]  # not only the first
    assert plan["entries"][1]["after"] == "ro rootflags=subvol=root rhgb quiet kho=on reserve_mem=1M:4K:oops"
    mod.commands.clear()
    backend.apply(plan)
    assert mod.commands == [
        ["/usr/sbin/grubby", "--update-kernel=2", "--remove-args=kho reserve_mem"],
        ["/usr/sbin/grubby", "--update-kernel=2", "--args=kho=on reserve_mem=1M:4K:oops"],
    ]
    mod.outputs["grubby"] = GRUBBY_SECOND
    assert backend.plan(*edit_for(reserve_mem=regions))["commands"] == []  # every entry right: no change


def test_select_prefers_what_exists(tmp_path):
    (tmp_path / "grub").write_text("")
    assert B.select(FakeModule(tmp_path), "").name == "grub"
    (tmp_path / "kcmd").write_text("ro\n")
    assert B.select(FakeModule(tmp_path), "").name == "kernel-install"
    with pytest.raises(B.BootloaderError, match="no boot loader configuration"):
        B.select(FakeModule(tmp_path / "nowhere"), "")
    with pytest.raises(B.BootloaderError, match="grubby is not installed"):
        B.select(FakeModule(tmp_path, bootloader="grubby"), "")


def test_write_atomic_keeps_owner_and_mode(tmp_path):
    target = tmp_path / "f"
    target.write_text("old")
    os.chmod(target, 0o604)
    if os.geteuid() == 0:
        os.chown(target, 1234, 5678)
    files.write_atomic(str(target), b"new")
    st = target.stat()
    assert target.read_text() == "new" and stat.S_IMODE(st.st_mode) == 0o604
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_grub_is_refused_where_bls_entries_carry_the_options(tmp_path):
    """EL 9/10: GRUB_ENABLE_BLSCFG=true and /boot/loader/entries; editing /etc/default/grub would change nothing."""
    (tmp_path / "grub").write_text('GRUB_CMDLINE_LINUX="ro"\nGRUB_ENABLE_BLSCFG=true\n')
    entries = tmp_path / "entries"
    entries.mkdir()
    grub = B.Grub(FakeModule(tmp_path, bins={"grub2-mkconfig"}), str(tmp_path / "grub"), None)
    grub.bls_entries = str(entries)
    assert grub.plan(*edit_for())["after"] == "ro kho=on"  # no entries: GRUB's own grub.cfg
    (entries / "a1b2-6.12.0-55.el10.x86_64.conf").write_text("title EL\noptions ro\n")
    with pytest.raises(B.BootloaderError, match="boots the BLS entries in .*GRUB_ENABLE_BLSCFG=true.*bootloader: grubby"):
        grub.plan(*edit_for())


def test_write_atomic_with_a_mode_makes_a_private_record_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """The one writer of the load record, the jump status, the lock and the report: a given mode is the file's
    whatever it replaces, a missing directory gets dir_mode, each write reaches the disk (fsync of the file and
    of the directory) before the rename is trusted."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    record = tmp_path / "state" / "loaded.json"
    files.write_atomic(str(record), b"{}", mode=0o600, dir_mode=0o700)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    os.chmod(record, 0o644)
    files.write_atomic(str(record), b'{"a": 1}', mode=0o600)
    assert record.read_text() == '{"a": 1}' and stat.S_IMODE(record.stat().st_mode) == 0o600
    assert len(synced) == 4 and sorted(p.name for p in record.parent.iterdir()) == ["loaded.json"]
