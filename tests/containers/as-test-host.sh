#!/usr/bin/env bash
# Makes a booted Debian system container a test host and runs a command of the checkout
# there, as root:   as-test-host.sh REPO COMMAND [ARG…]
# (tests/containers/run: tests/run's host part; bench/run-in-container: the benchmarks).
#
# REPO is the host's checkout, bind-mounted at the same path together with the host's Rust
# toolchain, so what the host built runs here unchanged. This installs the test host's
# packages the way tests/run does on the bare machine (from this release's archive) and lets
# the container's libvirtd start guests under systemd-nspawn; COMMAND then runs against this
# release's libvirtd, QEMU, virtnbdbackup, dbus-daemon and polkitd.
set -euo pipefail
repo=$1
shift
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
exec "$@"
