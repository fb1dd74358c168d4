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
