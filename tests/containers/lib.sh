# shellcheck shell=bash
# Booted Debian system containers for the system-container suite: build and cache a root per
# release, copy it for a run, boot it under systemd-nspawn, run commands inside, stop it.
# Sourced by tests/containers/run. Recipe: shared/reference/system-containers.md.

CT_CACHE=${VMSNAP_CT_CACHE:-/var/cache/vmsnap-test/containers}
CT_MIRROR=${VMSNAP_CT_MIRROR:-http://deb.debian.org/debian}

# What a root holds besides debootstrap's minimal base. The .deb's own dependencies are only
# downloaded into the root's apt cache, not installed: every run installs them the way a user
# does, with `apt install ./vmsnap_….deb`, without a network round trip. Test tools are
# installed (QEMU to run guests, tmux to type a password into pkttyagent on a terminal).
CT_BASE_INCLUDE=systemd,systemd-sysv,dbus,libpam-systemd,ca-certificates
CT_TEST_PACKAGES=(qemu-system-x86 qemu-utils tmux procps)

# What the Cockpit page's browser test adds to a root (tests/cockpit): Debian's Cockpit and
# Chromium with its driver and Selenium, nothing that downloads a browser; sudo, through which
# Cockpit gives an administrator administrative access.
CT_COCKPIT_PACKAGES=(cockpit-ws cockpit-bridge cockpit-system sudo chromium chromium-driver python3-selenium)

# The environment of everything run in a container: a fresh one, as a login would have.
# Nothing of the caller's may leak in — tests/run exports DBUS_SYSTEM_BUS_ADDRESS for its own
# private bus, and inside a container that would point vmsnapctl, pam_systemd and polkit at a
# socket that is not there.
CT_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
        LANG=C.UTF-8 TERM=xterm)

ct_log() { printf '[containers] %s\n' "$*" >&2; }
ct_die() { printf '[containers] ERROR: %s\n' "$*" >&2; exit 1; }

# Runs a command in a root that is not booted (package installation while building it).
ct_chroot_run() {
    local root=$1; shift
    "${CT_ENV[@]}" systemd-nspawn --quiet --register=no --keep-unit --as-pid2 -D "$root" \
        --setenv=DEBIAN_FRONTEND=noninteractive -- "$@"
}

# ct_logged LOG MESSAGE CMD…: runs CMD with its output appended to LOG; on failure shows the
# log's end and stops with MESSAGE.
ct_logged() {
    local log=$1 message=$2
    shift 2
    "$@" >> "$log" 2>&1 || { tail -n 20 "$log" >&2; ct_die "$message"; }
}

# The cache key of a root: the release, what it includes and the dependency list it caches.
ct_stamp() {
    local suite=$1 deps=$2
    printf '%s\n' "v1" "$suite" "$CT_BASE_INCLUDE" "${CT_TEST_PACKAGES[*]}" "$deps"
}

# Builds the root of release $1 (bookworm|trixie) unless an up-to-date one is cached; $2 are
# the package names to have in its apt cache. Prints the root's path.
ct_base_root() {
    local suite=$1 deps=$2 dir="$CT_CACHE/$1"
    if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$(ct_stamp "$suite" "$deps")" ] \
        && [ -x "$dir/root/usr/bin/qemu-system-x86_64" ]; then
        echo "$dir/root"; return 0
    fi
    ct_log "building the $suite root in $dir (cached for later runs)"
    rm -rf -- "$dir"
    mkdir -p "$dir"
    ct_logged "$dir/debootstrap.log" "debootstrap $suite failed" \
        debootstrap --variant=minbase --include="$CT_BASE_INCLUDE" "$suite" "$dir/root.new" "$CT_MIRROR"
    cp /etc/resolv.conf "$dir/root.new/etc/resolv.conf"
    # apt removes what it downloaded after an install by default; keep the cache full.
    echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > "$dir/root.new/etc/apt/apt.conf.d/90vmsnap-keep"
    ct_logged "$dir/apt.log" "apt-get update in the $suite root failed" \
        ct_chroot_run "$dir/root.new" apt-get update -qq
    ct_logged "$dir/apt.log" "installing test tools in the $suite root failed" \
        ct_chroot_run "$dir/root.new" apt-get install -y -q --no-install-recommends "${CT_TEST_PACKAGES[@]}"
    # shellcheck disable=SC2086  # a list of package names
    ct_logged "$dir/apt.log" "downloading VMSnap's dependencies in the $suite root failed" \
        ct_chroot_run "$dir/root.new" apt-get install -y -q --download-only $deps
    # A machine id per copy is made at boot; the root itself has none.
    : > "$dir/root.new/etc/machine-id"
    mv "$dir/root.new" "$dir/root"
    ct_stamp "$suite" "$deps" > "$dir/stamp"
    echo "$dir/root"
}

# Builds (or finds cached) the root of release $1 for the Cockpit browser test: a copy of the
# base root $2 with CT_COCKPIT_PACKAGES installed and the packages $3 (the .deb's
# dependencies) in its apt cache again, for the index this root was updated to: the test
# container has no network. Prints its path.
ct_cockpit_root() {
    local suite=$1 base=$2 deps=$3 dir="$CT_CACHE/$1-cockpit" stamp
    stamp=$(cat "$(dirname "$base")/stamp"; echo "v2 ${CT_COCKPIT_PACKAGES[*]}")
    if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ] && [ -x "$dir/root/usr/bin/chromium" ]; then
        echo "$dir/root"; return 0
    fi
    ct_log "building the $suite Cockpit root in $dir (cached for later runs)"
    rm -rf -- "$dir"
    mkdir -p "$dir"
    ct_copy_root "$base" "$dir/root.new"
    ct_logged "$dir/apt.log" "apt-get update in the $suite Cockpit root failed" \
        ct_chroot_run "$dir/root.new" apt-get update -qq
    ct_logged "$dir/apt.log" "installing Cockpit and Chromium in the $suite root failed" \
        ct_chroot_run "$dir/root.new" apt-get install -y -q --no-install-recommends "${CT_COCKPIT_PACKAGES[@]}"
    # shellcheck disable=SC2086  # a list of package names
    ct_logged "$dir/apt.log" "downloading VMSnap's dependencies in the $suite Cockpit root failed" \
        ct_chroot_run "$dir/root.new" apt-get install -y -q --download-only $deps
    mv "$dir/root.new" "$dir/root"
    echo "$stamp" > "$dir/stamp"
    echo "$dir/root"
}

# The package names in DEB $1's Depends (alternatives and versions dropped, libc/libgcc left
# out): what a root keeps in its apt cache, and part of its cache key.
ct_deb_deps() {
    dpkg-deb -f "$1" Depends | tr ',' '\n' | sed -e 's/[(|].*//' -e 's/ //g' \
        | grep -v '^libc6$\|^libgcc-s1$' | sort -u | tr '\n' ' '
}

# Copies root $1 to $2 for one run.
ct_copy_root() {
    rm -rf -- "$2"
    cp -a --reflink=auto "$1" "$2" || ct_die "cannot copy $1 to $2"
}

# Boots root $1 as machine $2 in the background; further arguments go to systemd-nspawn.
# Writes the nspawn pid to $CT_RUN/$2.nspawn and waits until systemd inside is up.
ct_boot() {
    local root=$1 name=$2 leader state
    shift 2
    "${CT_ENV[@]}" systemd-nspawn --quiet --boot --register=no --keep-unit --machine="$name" -D "$root" "$@" \
        > "$CT_RUN/$name.console" 2>&1 < /dev/null &
    echo $! > "$CT_RUN/$name.nspawn"
    for _ in $(seq 1 600); do
        leader=$(ct_leader "$name" 2>/dev/null) && {
            state=$(nsenter --target "$leader" --all -- "${CT_ENV[@]}" systemctl is-system-running 2>/dev/null) || true
            case "$state" in
                running|degraded) echo "$leader" > "$CT_RUN/$name.leader"; return 0 ;;
            esac
        }
        kill -0 "$(cat "$CT_RUN/$name.nspawn")" 2>/dev/null || { tail -n 30 "$CT_RUN/$name.console" >&2; ct_die "container $name exited while booting"; }
        sleep 0.2
    done
    tail -n 30 "$CT_RUN/$name.console" >&2
    ct_die "container $name did not finish booting"
}

# Boots a copy of root $1 as machine $2 with the checkout $3 and the Rust toolchain
# bind-mounted at their own paths, so what the host built there runs inside unchanged (the
# host suite, the benchmarks), and /dev/fuse, which systemd-nspawn does not give a container
# (the file-browsing tests change guest disks through qemu-storage-daemon's FUSE export and
# fuse2fs). Further arguments go to systemd-nspawn.
ct_boot_with_checkout() {
    local base=$1 name=$2 repo=$3 root="$CT_RUN/$2"
    shift 3
    ct_copy_root "$base" "$root"
    # Debian 13 mounts a tmpfs on /tmp at boot, which would hide a checkout bound below it.
    ln -sf /dev/null "$root/etc/systemd/system/tmp.mount"
    ct_boot "$root" "$name" --bind="$repo" --bind="$HOME/.cargo:/root/.cargo" \
        --bind-ro="${RUSTUP_HOME:-$HOME/.rustup}:/root/.rustup" --bind=/dev/fuse "$@"
}

# The pid of the container's systemd: the child of its nspawn process.
ct_leader() {
    local nspawn
    nspawn=$(cat "$CT_RUN/$1.nspawn")
    pgrep -P "$nspawn" -x systemd | head -n 1 | grep .
}

# Runs a command as root in all namespaces of container $1.
ct_exec() {
    local name=$1; shift
    nsenter --target "$(cat "$CT_RUN/$name.leader")" --all -- "${CT_ENV[@]}" "$@"
}

# Powers container $1 off and waits for nspawn to end. After a minute it kills the
# container's init, which ends every process in the container's pid namespace (killing
# nspawn alone would leave them running on the copied root).
ct_stop() {
    local name=$1 pid
    [ -f "$CT_RUN/$name.nspawn" ] || return 0
    pid=$(cat "$CT_RUN/$name.nspawn")
    kill -0 "$pid" 2>/dev/null || return 0
    [ -f "$CT_RUN/$name.leader" ] && ct_exec "$name" systemctl --no-block poweroff >/dev/null 2>&1
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    ct_log "container $name did not power off within a minute: killing it"
    [ -f "$CT_RUN/$name.leader" ] && kill -KILL "$(cat "$CT_RUN/$name.leader")" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
    return 0
}
