# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters: kho_summary_line, the handover summary's line for a host, as the kho_report callback prints it;
kho_result_normalise, a handover result in its one documented shape (the same on every ansible-core); and
kho_handover_result, the role's result record built from its facts (_result)."""

from __future__ import annotations

import time

from ansible_collections.kexec.kho.plugins.plugin_utils import _report, _result


def kho_summary_line(result, host):
    return _report.summary_line(host, result)


def kho_result_normalise(result):
    return _report.normalise(result)


def kho_handover_result(facts, now=None):
    return _result.record(facts, float(now) if now is not None else time.time())


class FilterModule:
    def filters(self):
        return {"kho_summary_line": kho_summary_line, "kho_result_normalise": kho_result_normalise,
                "kho_handover_result": kho_handover_result}
