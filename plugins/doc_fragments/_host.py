# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# Not a public API: the options every module that reads the running kernel shares.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  _internal:
    description:
      - Internal, not for playbooks; it may change in any release. Set by the collection's own action plugin and
        its tests, and on a real host to be left unset.
      - The roots of the kernel's file systems for a simulated tree (the collection's unit tests), and the boot id
        of the controller, which O(kexec.kho.kho_kexec#module:state=executed) passes so that a jump never replaces
        the kernel the run executes on.
    type: dict
    suboptions:
      debugfs_root:
        description: Where debugfs is (or is to be) mounted. KHO's files live under C(<debugfs_root>/kho).
        type: path
        default: /sys/kernel/debug
      sysfs_root:
        description: Root of sysfs.
        type: path
        default: /sys
      procfs_root:
        description: Root of procfs.
        type: path
        default: /proc
      devfs_root:
        description: Root of the device tree.
        type: path
        default: /dev
      refuse_boot_id:
        description: A boot id the host must not be on; only kho_kexec reads it, and changes nothing on that boot.
        type: str
  mount_debugfs:
    description:
      - Mount debugfs at C(/sys/kernel/debug) when it is not mounted.
      - When V(false) and debugfs is not mounted, the module reports it and does not mount it.
    type: bool
    default: false
requirements:
  - Root on the managed host (C(become=true)); debugfs is readable by root only.
"""

    # The same options, for a module of the action group that reads none of them: module_defaults for
    # group/kexec.kho.kho gives them to every module of the group, and one that refused them would fail there.
    GROUP = r"""
options:
  _internal:
    description:
      - Internal, not for playbooks. Accepted and ignored, so that the collection's tests can set it for every module
        of C(group/kexec.kho.kho).
    type: dict
  mount_debugfs:
    description:
      - Accepted and ignored, so that C(module_defaults) for C(group/kexec.kho.kho) can set it for every module of
        the group; this module mounts nothing.
    type: bool
    default: false
"""

    # Use with ansible.builtin.action_common_attributes, which describes each attribute.
    ATTRIBUTES = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""
