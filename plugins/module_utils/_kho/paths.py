# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every path the collection touches on a host, and the words of its own files, spelled once.  Not a public API.

The kernel's filesystems are roots (module options, so that tests can point them at simulated trees); the files
under them are relative to their root.  The documented defaults of the modules' options are these values
(ansible-test's validate-modules checks that each doc says what its argument spec says).
"""

from __future__ import annotations

# The kernel's filesystems (option defaults), and what is read under them.
DEBUGFS = "/sys/kernel/debug"
SYSFS = "/sys"
PROCFS = "/proc"
DEVFS = "/dev"
KHO = "kho"  # under DEBUGFS: out/ (what this kernel hands over), in/ (what it received)
KEXEC_LOADED = "kernel/kexec_loaded"  # under SYSFS
PMSG = "pmsg0"  # under DEVFS: pstore's message log
BOOT_ID = PROCFS + "/sys/kernel/random/boot_id"  # read by the controller's polls (and on the controller itself)

# The collection's own state, on /run: a tmpfs, so the next kernel starts without any of it.
STATE_DIR = "/run/kexec-kho"  # the load record
LOCK = STATE_DIR + "/handover.lock"
JUMP_STATUS = "/run/kexec-kho.jump"  # outside STATE_DIR: a load's record may be cleared while a jump is queued

# The jump status file (module_utils/_kho/jump_status.py), as state=executed's run and its queued jump write it and
# the controller's polls read it: one line, "RUN PID START DONE STATE".
JUMP_RUNNING = "running"  # written by the run before it changes anything, and after each change
JUMP_FAILED = "failed"  # the run failed and will not queue the jump (DONE: what it could not undo)
JUMP_STARTED = "started"  # written before the jump is queued
JUMP_EXIT = "exit"  # "exit N": the jump command returned, so the host did not jump
JUMP_NOT_LOADED = "not-loaded"  # no image was loaded any more when the jump was due
JUMP_NONE = "none"  # what a poll prints where no status file exists (a new boot, or a run that never wrote one)
DONE_FINALIZE, DONE_LOAD, DONE_RETURN = "finalize", "load", "return"  # DONE's words: the changes a rollback undoes
# What a poll prints of the run's process (its pid and start time from the status): alive, gone, or unknown.
RUN_ALIVE, RUN_GONE, RUN_UNKNOWN = "alive", "gone", "unknown"

# The host's own return (module_utils/_kho/self_return.py), armed before the jump for the next boot.  On disk: /run
# is a tmpfs of the kernel that leaves, so nothing under it reaches the next boot; a unit under /etc/systemd/system is
# read by systemd at every boot, cold ones too, which is why the script checks the boot before it acts.
RETURN_DIR = "/var/lib/kexec-kho/return"  # the script and the one-word marker that the confirm and the return race for
RETURN_NOTE = "/var/lib/kexec-kho/returned"  # the host's word that it returned by itself, for the controller to read
RETURN_UNIT_NAME = "kexec-kho-return.service"
RETURN_UNIT = "/etc/systemd/system/" + RETURN_UNIT_NAME
RETURN_WANTS = "/etc/systemd/system/sysinit.target.wants/" + RETURN_UNIT_NAME
# The marker's names: armed, then renamed by exactly one side (rename is atomic): the controller's confirm, or the
# script's return.
RETURN_ARMED, RETURN_CONFIRMED, RETURN_RETURNING = "armed", "confirmed", "returning"
RETURN_SCRIPT = "return.sh"
KEXEC_METADATA = "in/sub_fdts/kexec-metadata"  # under DEBUGFS/KHO: what the previous kernel said of itself
KEXEC_METADATA_OUT = "out/sub_fdts/kexec-metadata"  # under DEBUGFS/KHO: what this kernel says of itself to the next
SYSTEMD_RUNNING = "/run/systemd/system"  # exists where systemd is PID 1 (sd_booted)

# The distribution's and the boot loaders' files.
SYSTEMD_PSTORE = "/var/lib/systemd/pstore"  # where systemd-pstore moves the pstore records at boot
DEBIAN_KEXEC_DEFAULTS = "/etc/default/kexec"  # kexec-tools' LOAD_KEXEC
GRUB_DEFAULT = "/etc/default/grub"
KERNEL_CMDLINE = "/etc/kernel/cmdline"  # kernel-install's
BLS_ENTRIES = "/boot/loader/entries"
GRUB_CFGS = ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")  # EL, then Debian
BOOT = "/boot"
MODULES_IMAGES = "/usr/lib/modules/*/vmlinuz"  # kernel-install's images
# The running kernel's image and initrd, per distribution family, in the order looked for:
# Debian/Ubuntu name them vmlinuz-REL / initrd.img-REL, EL and Fedora vmlinuz-REL / initramfs-REL.img
# (BLS systems also keep the kernel as /usr/lib/modules/REL/vmlinuz); /vmlinuz is the last resort.
BOOT_IMAGES = (
    ("debian", "/boot/vmlinuz-{release}", "/boot/initrd.img-{release}"),
    ("el", "/boot/vmlinuz-{release}", "/boot/initramfs-{release}.img"),
    ("bls", "/usr/lib/modules/{release}/vmlinuz", "/boot/initramfs-{release}.img"),
    ("bls", "/usr/lib/modules/{release}/vmlinuz", "/usr/lib/modules/{release}/initrd"),
    ("symlink", "/vmlinuz", "/initrd.img"),
)
