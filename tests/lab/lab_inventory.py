"""The inventories `up` writes for a lab's guests, and the ssh_config behind the ways fleets are really reached."""

from __future__ import annotations

from pathlib import Path

from lab_common import GUEST_KERNEL, ssh_key

SSH_OPTIONS = ["StrictHostKeyChecking no", "UserKnownHostsFile /dev/null", "LogLevel ERROR"]


def write_inventory(rd: Path, guests: list[dict]) -> Path:
    """inventory.ini (direct: address and port in the inventory), and the ways fleets are really reached.

    ssh_config names each guest (an alias: HostName and Port only there) and, from the second guest on,
    `<name>-via-<first>`: the same guest behind a ProxyJump bastion, the first guest (which reaches the
    others' forwarded ports at QEMU's host address 10.0.2.2).  inventory-alias.ini uses those names with
    `-F ssh_config` and nothing else: no address, no port.  The inventories set no keep-alives: the jump
    bounds its own waits.
    """
    key = ssh_key()
    common = [
        "ansible_user=root", f"ansible_ssh_private_key_file={key}",
        "ansible_python_interpreter=/usr/bin/python3",
        "ansible_pipelining=true",  # one SSH command per module instead of mkdir, put, chmod, run
        f"kho_lab_kernel={GUEST_KERNEL}",
    ]
    lines = ["[kho_lab]", *(f"{g['name']} ansible_host=127.0.0.1 ansible_port={g['port']}" for g in guests),
             "", "[kho_lab:vars]", *common,
             "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'",
             ""]
    inv = rd / "inventory.ini"
    inv.write_text("\n".join(lines))
    config, alias_hosts = [], []
    for i, g in enumerate(guests):
        config += [f"Host {g['name']}", "    HostName 127.0.0.1", f"    Port {g['port']}", "    User root",
                   f"    IdentityFile {key}", *(f"    {o}" for o in SSH_OPTIONS), ""]
        alias_hosts.append(g["name"] if i == 0 else f"{g['name']}-via-{guests[0]['name']}")
        if i:
            config += [f"Host {alias_hosts[-1]}", "    HostName 10.0.2.2", f"    Port {g['port']}", "    User root",
                       f"    ProxyJump {guests[0]['name']}", f"    IdentityFile {key}",
                       *(f"    {o}" for o in SSH_OPTIONS), ""]
    (rd / "ssh_config").write_text("\n".join(config))
    (rd / "inventory-alias.ini").write_text("\n".join([
        "[kho_lab]", *alias_hosts, "", "[kho_lab:vars]", *common,
        f"ansible_ssh_common_args='-F {rd / 'ssh_config'}'", ""]))
    return inv
