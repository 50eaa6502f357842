#!/usr/bin/env bash
# Prepares a booted Debian container with Cockpit for the browser test (browser.py), as root:
#   setup.sh DEB
# Installs the package the way a user does, turns on cockpit.socket, and makes the two
# users who log in through Cockpit's login page (PAM, real passwords) and the test guests.
set -euo pipefail
trap 'echo "setup.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
DEB=$1
export DEBIAN_FRONTEND=noninteractive
IMAGES=/var/lib/libvirt/images
REFS=/root/refs

apt-get install -y -q "$DEB" | tail -n 3
test -f /usr/share/cockpit/vmsnap/manifest.json
# The page is listed by the bridge only where the service is installed (manifest condition).
cockpit-bridge --packages | grep '^vmsnap ' >/dev/null

# The containers' cgroup hierarchy is read-only for libvirt (system-containers.md).
grep -q '^cgroup_controllers = \[ \]' /etc/libvirt/qemu.conf || echo 'cgroup_controllers = [ ]' >> /etc/libvirt/qemu.conf
systemctl restart libvirtd
systemctl enable --now cockpit.socket

# (a) an administrator: sudo, so Cockpit's administrative access makes calls as root;
# (b) a member of the libvirt group: polkit lets it read and back up, not restore or scrub.
useradd --create-home --shell /bin/bash --groups sudo cpadmin
useradd --create-home --shell /bin/bash --groups libvirt cpuser
echo 'cpadmin:cockpit-admin-pw' | chpasswd
echo 'cpuser:cockpit-user-pw' | chpasswd

define() { # NAME: a domain with one qcow2 disk in $IMAGES, defined, not started
    cat > "/root/$1.xml" <<XML
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>48</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$IMAGES/$1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
XML
    virsh -q define "/root/$1.xml" >/dev/null
}

guest() { # NAME SIZE DATA_MIB PATTERN
    qemu-img create -q -f qcow2 "$IMAGES/$1.qcow2" "$2"
    local at
    # qemu-io writes at most 2 GiB per request.
    for ((at = 0; at < $3; at += 1024)); do
        qemu-io -f qcow2 -c "write -P $4 ${at}M $(($3 - at < 1024 ? $3 - at : 1024))M" "$IMAGES/$1.qcow2" >/dev/null
    done
    define "$1"
    virsh -q start "$1" >/dev/null
}
# cp-small is backed up, verified and restored; cp-large is long enough to cancel mid-way.
guest cp-small 1G 512 0x5a
guest cp-large 4G 3072 0x6b
# cp-broken is shut off and its disk does not exist: its backup fails (libvirt cannot start it).
define cp-broken
# The guests boot no system, so their disks stay as written: the reference for the restore.
mkdir -p "$REFS"
qemu-img convert -U -f qcow2 -O raw "$IMAGES/cp-small.qcow2" "$REFS/cp-small.raw"
echo "setup done: $(dpkg-query -W -f='cockpit ${Version}' cockpit-ws)"
