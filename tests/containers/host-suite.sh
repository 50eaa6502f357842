#!/usr/bin/env bash
# The host suite inside a booted Debian system container, run as root there by
# tests/containers/run:   host-suite.sh REPO
#
# REPO is the host's checkout, bind-mounted at the same path together with the host's Rust
# toolchain, so the test binaries the host built run here unchanged. This makes the container
# a test host the way tests/run makes the bare machine one (its packages from this release's
# archive), lets its libvirtd start guests under systemd-nspawn, and runs tests/run's host
# part: the same tests, against this release's libvirtd, QEMU, virtnbdbackup, dbus-daemon and
# polkitd.
set -euo pipefail
repo=$1
# shellcheck source=tests/host/lib.sh
source "$repo/tests/host/lib.sh"
export DEBIAN_FRONTEND=noninteractive

host_install
# libvirt cannot create cgroup v1 controllers in a container whose /sys/fs/cgroup is read-only
# (system-containers.md); without controllers it starts guests.
if ! grep -q '^cgroup_controllers = \[ \]' /etc/libvirt/qemu.conf; then
    echo 'cgroup_controllers = [ ]' >> /etc/libvirt/qemu.conf
fi
systemctl restart libvirtd
log "$(. /etc/os-release && echo "$PRETTY_NAME"): libvirt $(virsh -c qemu:///system version --daemon | sed -n 's/.*running hypervisor: QEMU //p;s/^Using library: libvirt //p' | paste -sd' ' -), virtnbdbackup $(virtnbdbackup -V 2>&1 | tail -n 1)"

export PATH="/root/.cargo/bin:$PATH" VMSNAP_TEST_IN_CONTAINER=1
exec "$repo/tests/run"
