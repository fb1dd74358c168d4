# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The finalize / abort transition of finalize-era kernels.  Not a public API."""

from __future__ import annotations

import errno
import hashlib
import os

from ansible_collections.kexec.kho.plugins.module_utils._kho.facts import ENABLE_HINT
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import KhoHost

NO_ABORT = ("this kernel cannot abort a finalized handover (the 6.19 to 7.0 form refuses 0 with EINVAL): "
            "unload the kexec image with kexec.kho.kho_kexec state=unloaded instead; "
            "the next finalize refreshes the state")


class FinalizeError(Exception):
    pass


class KhoInactive(FinalizeError):
    """KHO is not usable on this boot (require_kho): what kho_facts' own reason says too."""


def outgoing_fdt(host: KhoHost) -> dict | None:
    data = host.read_bytes(os.path.join(host.out_dir, "fdt"))
    return None if data is None else {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def require_kho(host: KhoHost) -> str:
    """The interface generation; raises when KHO is not usable on this boot."""
    generation = host.generation()
    if generation == "none":
        raise KhoInactive(f"KHO is not active on this host ({host.kho} is absent): {ENABLE_HINT}; "
                          "if it is, check that the kernel has CONFIG_KEXEC_HANDOVER and that debugfs is mounted "
                          "(mount_debugfs: true)")
    if generation == "unknown":
        raise KhoInactive(f"{host.kho} exists but has no out/ directory: an interface this collection does not know")
    return generation


def transition(host: KhoHost, want: bool, check_mode: bool) -> dict:
    """Bring out/finalize to ``want``; returns the result fields.  Reads first, writes only a change."""
    generation = require_kho(host)
    result = {"interface": generation, "finalize_supported": generation == "finalize", "changed": False}
    if generation == "live":
        result.update(before=None, after=None,
                      msg="live-era kernel: there is no finalize state; the outgoing tree is always current")
        return result
    before = host.finalized()
    result["before"] = before
    if before == want:
        result.update(after=before, msg="already " + ("finalized" if want else "not finalized"))
    elif check_mode:
        result.update(changed=True, after=want, msg="would " + ("finalize" if want else "abort"))
    else:
        try:
            host.write_finalize(1 if want else 0)
        except OSError as exc:
            if not want and exc.errno == errno.EINVAL:
                raise FinalizeError(NO_ABORT) from exc
            raise FinalizeError(f"writing {1 if want else 0} to {host.finalize_path} failed: "
                                f"{os.strerror(exc.errno) if exc.errno else exc}") from exc
        result.update(changed=True, after=host.finalized(), msg="finalized" if want else "aborted")
    result["fdt"] = outgoing_fdt(host)
    return result
