# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What kho_facts reads on the host.  Blobs leave as base64; the controller decodes them."""

from __future__ import annotations

import base64
import os
import sys

from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import kho_params
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import KhoHost, boot_images
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

PSTORE_FILES, PSTORE_BYTES = 4096, 1 << 22  # bounds of a pstore search: files walked, bytes read from each
PSTORE_SEARCH_SPEC = {"type": "list", "elements": "str"}  # kho_facts' option, and kho_kexec's with facts_after
ENABLE_HINT = "add kho=on to the kernel command line (kexec.kho.kho_cmdline) and reboot"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _side(host: KhoHost, directory: str, with_fdt: bool = True) -> dict:
    present = host.exists(directory)
    return {
        "present": present,
        "fdt": _b64(host.read_bytes(os.path.join(directory, "fdt"))) if present and with_fdt else None,
        "sub_blobs": {k: _b64(v) for k, v in host.blobs(os.path.join(directory, "sub_fdts")).items()},
    }


def support(host: KhoHost, generation: str, mounted: bool, params: dict, config: dict | None) -> dict:
    """supported / enabled / why, from what exists, then the kernel config or kallsyms."""
    if generation != "none":
        return {"supported": True, "enabled": True, "reason": f"{host.kho} exists"}
    built_in = config.get("CONFIG_KEXEC_HANDOVER") == "y" if config is not None else host.has_kho_symbols()
    if built_in is None:
        return {"supported": None, "enabled": None,
                "reason": f"{host.kho} is absent and neither config.gz nor kallsyms is readable; "
                          "run with become: true" + ("" if mounted else " and mount_debugfs: true")}
    if not built_in:
        return {"supported": False, "enabled": False,
                "reason": "the running kernel is built without CONFIG_KEXEC_HANDOVER: boot a kernel built with the "
                          "collection's kernel config fragment, files/kho.config (docs/kernel.md builds a Debian package "
                          "of one), with kho=on (playbook kexec.kho.enable, kho_enable_next_kernel naming it)"}
    default_on = bool(config) and config.get("CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT") == "y"
    enabled = params["kho_enabled"] if params["kho_enabled"] is not None else default_on
    if not enabled:
        return {"supported": True, "enabled": False,
                "reason": f"KHO is built in but not enabled on this boot: {ENABLE_HINT}"}
    if not mounted:
        return {"supported": True, "enabled": True,
                "reason": f"debugfs is not mounted at {host.debugfs}: set mount_debugfs: true"}
    return {"supported": True, "enabled": True,
            "reason": "KHO is enabled but its debugfs files are compiled out (CONFIG_KEXEC_HANDOVER_DEBUGFS)"}


def _no_systemctl(_argv):
    return 127, "", "not run"


def gather(host: KhoHost, mounted: bool, read_log: bool = True, run_command=_no_systemctl) -> dict:
    """Everything kho_facts reports; ``run_command`` (AnsibleModule.run_command) asks systemd."""
    generation = host.generation()
    cmdline = host.cmdline()
    params = kho_params(cmdline)
    config = host.kernel_config()
    state = support(host, generation, mounted, params, config)
    interface = generation if generation != "none" or not state["enabled"] else "unknown"
    log = host.kernel_log() if read_log else None
    out = _side(host, host.out_dir)
    if out["present"]:
        out["finalized"] = host.finalized()
        out["scratch"] = host.scratch()
    return {
        **state,
        "interface": interface,
        "debugfs_mounted": mounted,
        "debugfs_root": host.debugfs,
        "release": host.release(),
        "images": boot_images(host.release()),
        "machine": os.uname().machine,
        "byteorder": sys.byteorder,
        "cmdline": cmdline,
        "params": params,
        "kernel_config": config,
        "kexec_loaded": host.kexec_loaded(),
        "boot_id": host.boot_id(),
        "liveupdate": liveupdate.gather(host.devfs, host.procfs, cmdline, log, run_command),
        "lockdown": host.lockdown(),
        "log": log,
        "reserve_mem_param": host.reserve_mem_param(),
        "out": out,
        "in": _side(host, host.in_dir),
    }


def read(host: KhoHost, read_log: bool, needles: list | None, run_command) -> dict:
    """kho_facts' read (the lock and the preflight aside): the raw facts, and the needles found in pstore."""
    out = {"kho_raw": gather(host, host.debugfs_mounted(), read_log, run_command)}
    if needles:
        out["pstore_found"] = pstore_search(pstore_dirs(host), needles)
    return out


def pstore_dirs(host: KhoHost) -> list:
    """Where this boot's pstore records are: the pstore filesystem, and systemd-pstore's archive."""
    return [os.path.join(host.sysfs, "fs", "pstore"), paths.SYSTEMD_PSTORE]


def pstore_search(dirs: list, needles: list, max_files: int = PSTORE_FILES, max_bytes: int = PSTORE_BYTES) -> list:
    """The needles found in any record under dirs (at most max_files files, max_bytes read from each)."""
    wanted = {n: n.encode("utf-8") for n in needles}
    found, seen = set(), 0
    for top in dirs:
        for root, _dirs, files in os.walk(top):
            for name in files:
                seen += 1
                if seen > max_files or len(found) == len(wanted):
                    return sorted(found)
                try:
                    with open(os.path.join(root, name), "rb") as fh:
                        data = fh.read(max_bytes)
                except OSError:
                    continue
                found.update(n for n, b in wanted.items() if b in data)
    return sorted(found)
