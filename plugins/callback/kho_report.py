# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: kho_report
type: notification
short_description: Summarize KHO handovers, on screen and as JSON and HTML files
version_added: 0.1.0
author:
  - kexec.kho contributors (@kexec-kho)
description:
  - Collects every host's C(kho_handover_result) (set by the P(kexec.kho.handover#role) role, also when it fails)
    and, at the end of the run, even one where every host failed, prints one line per host and writes the
    summary as JSON and as a self-contained HTML page - the fleet on one time axis (each host's phases as bars -
    preflight, load, to gone, gone to banner, banner to answer, verify - batch by batch, with each host's downtime), then
    each host's verdict, kernels, regions and live update.
  - The JSON has one shape whatever the controller's ansible-core (2.16 templates numbers as strings and nulls as
    empty strings, later versions keep their types) - numbers are numbers, what is not known is V(null), and each
    host's C(kho_handover_result) has every documented field. The callback adds C(batch) (the C(serial) batch the
    host ran in, from 1), C(finished_at) (when its result reached the controller,
    seconds since the epoch) and C(started_at) (C(finished_at) less C(timings.total), else when its batch started).
  - The lines on screen and in the HTML say C(unknown) for what is not known.
  - A result is data from the hosts; any value renders (a text where a number was expected), control characters
    are shown as C(\xNN) on the terminal, never sent to it, and the files are written atomically with mode 0600
    (or stricter, as the umask says).
requirements:
  - Enable it with C(callbacks_enabled = kexec.kho.kho_report) in C(ansible.cfg) or C(ANSIBLE_CALLBACKS_ENABLED).
options:
  json_file:
    description: Where to write the JSON summary; nothing is written when unset.
    type: path
    env:
      - name: KHO_REPORT_JSON
    ini:
      - section: kho_report
        key: json_file
  html_file:
    description: Where to write the HTML report; nothing is written when unset.
    type: path
    env:
      - name: KHO_REPORT_HTML
    ini:
      - section: kho_report
        key: html_file
"""

import json
import time

from ansible.plugins.callback import CallbackBase

from ansible_collections.kexec.kho.plugins.plugin_utils._report import normalise, render_html, summary_line, write_private


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "kexec.kho.kho_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results: dict = {}
        self.starts: dict = {}
        self.batch, self.batch_started = None, None

    def v2_playbook_on_play_start(self, play):
        # Sent once per serial batch of a play: the batch a result arrives in is the play's count so far.
        name = play.get_name()
        self.starts[name] = self.starts.get(name, 0) + 1
        self.batch, self.batch_started = self.starts[name], round(time.time(), 3)

    def v2_runner_on_ok(self, result):
        facts = result._result.get("ansible_facts") or {}
        if "kho_handover_result" in facts:
            r = normalise(json.loads(json.dumps(facts["kho_handover_result"], default=str)))
            finished = time.time()
            total = r["timings"]["total"]
            r.update(batch=self.batch, finished_at=round(finished, 3),
                     started_at=round(finished - total, 3) if total is not None else self.batch_started)
            self.results[result._host.get_name()] = r

    def v2_playbook_on_stats(self, stats):
        if not self.results:
            return
        self._display.banner("KHO HANDOVER SUMMARY")
        for host in sorted(self.results):
            self._display.display(summary_line(host, self.results[host]))
        json_file, html_file = self.get_option("json_file"), self.get_option("html_file")
        if json_file:
            write_private(json_file, json.dumps(self.results, indent=1, sort_keys=True))
        if html_file:
            write_private(html_file, render_html(self.results))
