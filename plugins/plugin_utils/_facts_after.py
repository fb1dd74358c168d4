# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The new boot's facts in one command, without a module run after the jump.  Not a public API.

With facts_after, once the new boot answered (and test_command passed), kho_kexec runs
``python -I -S -c BOOT SOURCES PARAMS`` there: BOOT
imports the collection's own host-side readers from SOURCES (their source text, sent with the command; the
standard library only, no ansible.module_utils.basic) and prints module_utils/_kho/bare.answer(PARAMS), the
facts kho_facts would return, read by the same code.  The controller decodes them as kho_facts' action does.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shlex
import zlib
from pathlib import Path

from ansible_collections.kexec.kho.plugins.module_utils._kho import bare, paths
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_from_raw

PACKAGE = "ansible_collections.kexec.kho.plugins.module_utils._kho"
MODULES = ("paths", "cmdline", "host", "liveupdate", "facts", "bare")  # bare.py and what it imports
PYTHON = re.compile(r"/[A-Za-z0-9._+/-]{1,255}")  # an interpreter path as the host's load run reported it
READ_SECONDS = 45  # the read's bound beyond a poll's: its four systemd queries, 10 s each at most (bare.py)
MAX_COMMAND = 96 << 10  # the kernel takes one argument of at most 128 KiB (sudo's sh -c carries the whole command)
MAX_TEXT = bare.MAX_ANSWER + 2  # what BOOT prints at most: bare's answer and its line end
MAX_WHY = 1000  # characters of the host's own reason for a failed read kept in the warning
MAX_DEPTH = 32  # the answer's nesting: the facts are a few levels deep; deeper is refused before it goes further

# Imports PACKAGE's modules from the sources in argv[1] (base64 of zlib of JSON {name: source}), then prints
# bare.answer(argv[2]).  Only the names under PACKAGE are served from there; everything else is the standard library.
BOOT = """\
import base64, importlib.util, json, sys, zlib
S = json.loads(zlib.decompress(base64.b64decode(sys.argv[1])))
P = %r
U = P.split('.')
D = ['.'.join(U[:i]) for i in range(1, len(U) + 1)]
class L:
    @classmethod
    def find_spec(c, n, p=None, t=None):
        if n in D:
            return importlib.util.spec_from_loader(n, c, is_package=True)
        if n.rpartition('.')[0] == P and n.rpartition('.')[2] in S:
            return importlib.util.spec_from_loader(n, c)
    @staticmethod
    def create_module(spec):
        return None
    @staticmethod
    def exec_module(m):
        n = m.__name__
        src = '' if n in D else S[n.rpartition('.')[2]]
        exec(compile(src, '<kexec.kho ' + n + '>', 'exec'), m.__dict__)
sys.meta_path.insert(0, L)
from ansible_collections.kexec.kho.plugins.module_utils._kho import bare
sys.stdout.write(bare.answer(json.loads(sys.argv[2])) + '\\n')
""" % PACKAGE


@functools.lru_cache(maxsize=1)
def sources() -> str:
    """MODULES' source text, as BOOT reads it (made once per controller process)."""
    here = Path(paths.__file__).resolve().parent
    text = {name: (here / f"{name}.py").read_text(encoding="utf-8") for name in MODULES}
    return base64.b64encode(zlib.compress(json.dumps(text).encode("utf-8"), 9)).decode("ascii")


def read_command(python: str, params: dict) -> str | None:
    """The read's shell command, or None where the interpreter is not a plain absolute path (no read then)."""
    if not isinstance(python, str) or not PYTHON.fullmatch(python):
        return None
    argv = (python, "-I", "-S", "-c", BOOT, sources(), json.dumps(params, separators=(",", ":")))
    command = " ".join(shlex.quote(a) for a in argv)
    return command if len(command) <= MAX_COMMAND else None


class ReadError(ValueError):
    """An answer that is not the new boot's facts: the read failed, for this reason."""


def decode(text, new_boot_id) -> dict:
    """The read's answer decoded as kho_facts' action does: {"facts", "pstore_found"}, or {"error": why} for
    anything else the host printed: too long, not JSON, nested too deep, not the facts' shape, facts of another
    boot than ``new_boot_id`` (the one the jump's polls saw come up), or any failure while decoding them.
    Total: never raises, whatever the answer."""
    try:
        return _decode(text, new_boot_id)
    except ReadError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # pylint: disable=broad-except  # a host's answer that breaks the decoder fails the read
        return {"error": f"the new boot's facts could not be decoded: {type(exc).__name__}: {exc}"}


def _decode(text, new_boot_id) -> dict:
    answer = _parse(text)
    if not isinstance(answer, dict) or not isinstance(answer.get("kho_raw"), dict):
        why = answer.get("error") if isinstance(answer, dict) else None
        raise ReadError(why[:MAX_WHY] if isinstance(why, str) else "the new boot's facts came back without kho_raw")
    same_boot(answer["kho_raw"].get("boot_id"), new_boot_id)
    found = answer.get("pstore_found") or []
    return {"facts": facts_from_raw(answer["kho_raw"]),
            "pstore_found": sorted(x for x in found if isinstance(x, str)) if isinstance(found, list) else []}


def same_boot(read_id, new_boot_id) -> None:
    """Facts are the new boot's only where they carry its boot id: any other (another boot's, none, a malformed
    one) is a failed read, never evidence of what the new kernel took up."""
    if not isinstance(new_boot_id, str) or not new_boot_id:
        raise ReadError("the new boot's id is not known, so no facts can be taken as its own")
    if read_id != new_boot_id:
        shown = repr(read_id[:64]) if isinstance(read_id, str) else ("none" if read_id is None else "a " + type(read_id).__name__)
        raise ReadError(f"the facts read carry boot id {shown}, not the new boot's {new_boot_id} that the polls saw come up")


def _parse(text):
    """The answer's JSON, its length checked before it is parsed and its nesting after."""
    if not isinstance(text, str):
        raise ReadError(f"the new boot's facts came back as {type(text).__name__}, not text")
    if len(text) > MAX_TEXT:
        raise ReadError(f"the new boot's facts are {len(text):,} characters, more than the {MAX_TEXT:,} read at most")
    try:
        answer = json.loads(text)
    except RecursionError as exc:
        raise ReadError(f"the new boot's facts are nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise ReadError(f"the new boot's facts are not JSON: {exc}") from exc
    if _depth(answer, MAX_DEPTH) > MAX_DEPTH:
        raise ReadError(f"the new boot's facts are nested deeper than {MAX_DEPTH} levels")
    return answer


def _depth(value, limit: int) -> int:
    """How deep ``value``'s lists and mappings nest, counted no further than ``limit`` + 1 (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
