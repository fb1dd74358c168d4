# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# Not a public API: the options every module that reads the running kernel shares.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  debugfs_root:
    description:
      - For tests against a simulated tree only; on a real host the default is right.
      - Where debugfs is (or is to be) mounted. KHO's files live under C(<debugfs_root>/kho).
    type: path
    default: /sys/kernel/debug
  sysfs_root:
    description:
      - For tests against a simulated tree only; on a real host the default is right.
      - Root of sysfs, read for C(kernel/kexec_loaded) and C(kernel/security/lockdown).
    type: path
    default: /sys
  procfs_root:
    description:
      - For tests against a simulated tree only; on a real host the default is right.
      - Root of procfs, read for C(cmdline), C(mounts), C(kallsyms), C(config.gz) and the boot id.
    type: path
    default: /proc
  devfs_root:
    description:
      - For tests against a simulated tree only; on a real host the default is right.
      - Root of the device tree, read for C(kmsg) and C(liveupdate).
    type: path
    default: /dev
  mount_debugfs:
    description:
      - Mount debugfs at O(debugfs_root) when it is not mounted.
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
  debugfs_root:
    description:
      - Accepted and ignored, so that C(module_defaults) for C(group/kexec.kho.kho) can set it for every module of
        the group; this module reads no debugfs.
    type: path
    default: /sys/kernel/debug
  sysfs_root:
    description:
      - Accepted and ignored, as O(debugfs_root).
    type: path
    default: /sys
  procfs_root:
    description:
      - Accepted and ignored, as O(debugfs_root).
    type: path
    default: /proc
  devfs_root:
    description:
      - Accepted and ignored, as O(debugfs_root).
    type: path
    default: /dev
  mount_debugfs:
    description:
      - Accepted and ignored, as O(debugfs_root); this module mounts nothing.
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
