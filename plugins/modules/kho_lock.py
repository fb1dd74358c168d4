#!/usr/bin/python
# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kho_lock
short_description: Hold a host's handover lock, so that one handover runs on a host at a time
version_added: 0.1.0
description:
  - Takes (O(state=acquired)) or releases (O(state=released)) a lock file on the host, by default
    C(/run/kexec-kho/handover.lock). The file records which run holds it; it is read and changed only
    under C(flock), and C(/run) empties at the jump, so the new kernel starts unlocked.
  - The owner is the running C(ansible-playbook) (or C(ansible)) process on the controller, identified by
    controller host name, process id, process start time and a random nonce the run's first task writes under
    C(~/.ansible/kexec-kho/runs), with the controller's machine id and pid namespace beside them, and the
    inventory name the task runs for. Each task of one run for one inventory name is the same owner, so taking
    the lock again changes nothing; one host reached under two inventory names is locked for one at a time.
  - When another owner holds the lock, the module takes it over only with proof that its run has ended, that is,
    the run's nonce is on this controller (same host name, machine id and pid namespace) and its process is gone
    (a run cut off by a dropped connection, say). A holder on another controller or container, one still running,
    or another inventory name of this same run, is never replaced unless O(break_lock) names its run.
  - M(kexec.kho.kho_facts) takes the same lock, the same way, in its read with its O(kexec.kho.kho_facts#module:lock)
    option, one remote run fewer; the P(kexec.kho.handover#role) role does so.
author:
  - kexec.kho contributors (@kexec-kho)
extends_documentation_fragment:
  - kexec.kho._host.group
  - kexec.kho._host.attributes
  - ansible.builtin.action_common_attributes
options:
  state:
    description:
      - V(acquired) takes the lock, or fails naming the run that holds it.
      - V(released) removes the lock if this run holds it, and fails if another run does, unless O(break_lock) names
        that run.
    type: str
    default: acquired
    choices: [acquired, released]
  path:
    description: The lock file.
    type: path
    default: /run/kexec-kho/handover.lock
  break_lock:
    description:
      - The run id (the C(run) of RV(holder)) of a holder to replace even though this controller cannot tell that it
        has ended. Only that exact holder is replaced.
      - With O(state=released), that holder's lock is released (taken over, then removed), as by hand after a run
        that ended without releasing it.
    type: str
  owner:
    description:
      - Set by the action plugin to this run's identity; a value given in the task is ignored.
    type: dict
notes:
  - The liveness check reads C(/proc) on the controller; a controller without it never takes a lock over
    on its own.
seealso:
  - module: kexec.kho.kho_facts
  - module: kexec.kho.kho_kexec
"""

EXAMPLES = r"""
- name: One handover per host at a time
  kexec.kho.kho_lock:
  become: true

- name: Take over a lock whose run is known to be over (its id is in the refusal message)
  kexec.kho.kho_lock:
    break_lock: "ctl-1:41877:9184523:5f0c2a9e3b1d7c44"
  become: true

- name: Give it back
  kexec.kho.kho_lock:
    state: released
  become: true

- name: Release the lock a run left behind, by hand (its id is in the refusal message)
  kexec.kho.kho_lock:
    state: released
    break_lock: "ctl-1:41877:9184523:5f0c2a9e3b1d7c44"
  become: true
"""

RETURN = r"""
acquired:
  description: This run holds the lock after the task (in check mode, would hold it).
  returned: O(state=acquired)
  type: bool
holder:
  description: The record of the run holding the lock after the task (V(null) when released).
  returned: always
  type: dict
  sample: {"run": "ctl-1:41877:9184523:5f0c2a9e3b1d7c44", "controller": "ctl-1",
           "machine_id": "0f3c1c9be1a54c7e9b2d6e4f8a7d1c2b", "pid_namespace": "pid:[4026531836]", "target": "web-1",
           "pid": 41877, "user": "sre", "since": "2026-11-25T17:02:11Z"}
previous:
  description: The record of the run whose lock this task took over (or, with O(state=released), released), when it did.
  returned: O(state=acquired), or O(state=released) with O(break_lock)
  type: dict
path:
  description: The lock file.
  returned: success
  type: str
  sample: /run/kexec-kho/handover.lock
  version_added: 0.3.0
msg:
  description: What was done, or who holds the lock.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kexec.kho.plugins.module_utils._kho import host, lock


def released(params: dict, check_mode: bool) -> dict:
    """state=released: this run's lock removed; with break_lock, the named run's lock taken over first, then removed."""
    path, owner, breaking = params["path"], lock.owner_of(params), params["break_lock"]
    previous = None
    if breaking and lock.read(path) is not None:  # a free lock is not taken only to be removed
        taken = lock.acquire(path, owner, breaking, check_mode)
        if not taken["acquired"]:
            raise lock.HeldByOther(taken["holder"])
        previous = taken["previous"]
        if check_mode and previous is not None:  # check mode took nothing over: the file is still that run's
            return {"changed": True, "holder": None, "previous": previous, "msg": f"would release {path} of run {breaking}"}
    result = lock.release(path, owner, check_mode)
    if previous is not None:
        return {**result, "previous": previous, "msg": f"released {path} of run {breaking}"}
    return {**result, "msg": f"released {path}" if result["changed"] else f"{path} was not held"}


def main():
    module = AnsibleModule(
        # host.GROUP_SPEC: the action group's options, accepted and ignored (the doc fragment _host.group)
        argument_spec={"state": {"type": "str", "default": "acquired", "choices": ["acquired", "released"]},
                       **lock.ARGUMENT_SPEC, **host.GROUP_SPEC},
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        if module.params["state"] == "released":
            module.exit_json(path=path, **released(module.params, module.check_mode))
        result = lock.take(module.params, module.check_mode)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except lock.HeldByOther as exc:
        module.fail_json(msg=f"{path} is held by another run ({exc.holder['run']}), not released; to release it, name "
                             "that run with break_lock", holder=exc.holder)
    except PermissionError as exc:
        module.fail_json(msg=f"cannot lock {path}: {exc}; this needs root: use become: true", path=path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
