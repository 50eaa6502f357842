# Shared functions of the test host: install what is missing, start libvirt without systemd,
# run a private system bus with the real polkitd, and clean up only what we created.
# Sourced by tests/run and tests/host/demo. Recipe: shared/reference/test-host.md.

HOST_PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils virtnbdbackup
               dbus polkitd faketime systemd libxml2-utils make xz-utils tmux fish zsh
               prometheus-node-exporter prometheus
               fdisk dosfstools mtools fuse2fs xfsprogs e2fsprogs)

log() { printf '[test-host] %s\n' "$*" >&2; }
die() { printf '[test-host] ERROR: %s\n' "$*" >&2; exit 1; }

# npm builds the Cockpit page (cockpit/build fetches PatternFly's CSS with `npm ci`). Any npm
# will do: Debian's, or the one a NodeSource nodejs brings (which Debian's would conflict with).
host_install_npm() {
    command -v npm >/dev/null && return 0
    [ "$(id -u)" -eq 0 ] || die "npm is missing and not root to install it"
    log "installing: npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm >&2 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm >&2; } \
        || die "cannot install npm"
}

# Installs the packages that are missing. qemu-utils is pinned to the version of
# qemu-system-x86: machines that carry a newer qemu-utils from backports otherwise refuse to
# install Debian 12's QEMU ("held broken packages").
host_install() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    # Also need qemu-img and qemu-system of the same build.
    if ! dpkg-query -W -f='${Version}' qemu-system-x86 >/dev/null 2>&1 \
       || [ "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null)" != "$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null)" ]; then
        missing+=(qemu-utils qemu-system-x86)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "packages missing (${missing[*]}) and not root to install them"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    local qemu_version pins=()
    qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    [ -n "$qemu_version" ] && [ "$qemu_version" != "(none)" ] || die "no qemu-system-x86 package available"
    for p in "${missing[@]}"; do
        case "$p" in
            qemu-utils|qemu-system-x86) ;;
            *) pins+=("$p") ;;
        esac
    done
    apt-get install -y -q --allow-downgrades "${pins[@]}" \
        "qemu-system-x86=$qemu_version" "qemu-utils=$qemu_version" >&2 \
        || die "apt-get install failed"
}

# Starts virtlogd and libvirtd unless libvirt already answers (systemd is not PID 1 here).
host_start_libvirt() {
    if virsh -c qemu:///system version >/dev/null 2>&1; then return 0; fi
    # Only this mount namespace's daemons: a booted test container's own libvirtd is visible here too.
    pgrep --ns $$ --nslist mnt -x virtlogd >/dev/null || virtlogd -d || die "virtlogd did not start"
    pgrep --ns $$ --nslist mnt -x libvirtd >/dev/null || libvirtd -d || die "libvirtd did not start"
    local i
    for i in $(seq 1 60); do
        virsh -c qemu:///system version >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "libvirtd does not answer on qemu:///system"
}

# Unprivileged accounts for tests: vmsnaptest (no rights) and vmsnaplv (in the libvirt group).
host_test_user() {
    id vmsnaptest >/dev/null 2>&1 || useradd --create-home --shell /bin/bash vmsnaptest \
        || die "cannot create the user vmsnaptest"
    getent group libvirt >/dev/null || die "the libvirt group is missing (libvirt-daemon-system)"
    id vmsnaplv >/dev/null 2>&1 || useradd --create-home --shell /bin/bash -G libvirt vmsnaplv \
        || die "cannot create the user vmsnaplv"
    # The unprivileged user that reads guest file systems (the package creates it the same way).
    id vmsnap-files >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vmsnap-files || die "cannot create the user vmsnap-files"
}

POLKIT_FILES=("polkit/org.vmsnap.policy:/usr/share/polkit-1/actions/org.vmsnap.policy"
              "polkit/50-org.vmsnap.rules:/usr/share/polkit-1/rules.d/50-org.vmsnap.rules")

# Puts the checkout's polkit action and rules files where polkitd reads them, keeping copies of
# whatever was installed there (restored by host_restore_polkit with the same directory $1).
host_install_polkit() {
    local dir=$1 repo pair src dst
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    for pair in "${POLKIT_FILES[@]}"; do
        src=${pair%%:*}; dst=${pair#*:}
        mkdir -p "$(dirname "$dst")" "$dir/polkit-saved"
        [ -e "$dst" ] && cp -p "$dst" "$dir/polkit-saved/$(basename "$dst")"
        install -m 644 "$repo/$src" "$dst"
    done
}

host_restore_polkit() {
    local dir=$1 pair dst
    for pair in "${POLKIT_FILES[@]}"; do
        dst=${pair#*:}
        if [ -e "$dir/polkit-saved/$(basename "$dst")" ]; then
            cp -p "$dir/polkit-saved/$(basename "$dst")" "$dst"
        else
            rm -f -- "$dst"
        fi
    done
}

# Renders the private bus configuration for socket $1 into file $2.
host_bus_config() {
    local socket=$1 out=$2 repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    sed -e "s|@LISTEN@|unix:path=$socket|" -e "s|@POLICY_DIR@|$repo/systemd|" \
        "$repo/tests/host/system-bus.conf.in" > "$out"
}

# Starts a private system bus in directory $1 and exports DBUS_SYSTEM_BUS_ADDRESS.
host_start_bus() {
    local dir=$1
    host_bus_config "$dir/bus" "$dir/bus.conf"
    local out
    out=$(dbus-daemon --config-file="$dir/bus.conf" --fork --print-address=1 --print-pid=1) \
        || die "dbus-daemon did not start"
    echo "$out" | sed -n 2p > "$dir/bus.pid"
    export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$dir/bus"
    log "private system bus at $DBUS_SYSTEM_BUS_ADDRESS"
}

# Starts the real polkitd on the private bus (it drops to the polkitd user).
host_start_polkitd() {
    local dir=$1 i
    /usr/lib/polkit-1/polkitd --no-debug >"$dir/polkitd.log" 2>&1 &
    echo $! > "$dir/polkitd.pid"
    for i in $(seq 1 50); do
        busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" status org.freedesktop.PolicyKit1 >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "polkitd did not register on the private bus (see $dir/polkitd.log)"
}

# Starts vmsnapd ($1 = binary) on the private bus and waits until it owns its name; further
# arguments go to vmsnapd.
host_start_vmsnapd() {
    local bin=$1 dir=$2 i
    shift 2
    "$bin" --log-to-stderr "$@" >"$dir/vmsnapd.log" 2>&1 &
    echo $! > "$dir/vmsnapd.pid"
    for i in $(seq 1 100); do
        busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" status org.vmsnap.VMSnap1 >/dev/null 2>&1 && return 0
        kill -0 "$(cat "$dir/vmsnapd.pid")" 2>/dev/null || { cat "$dir/vmsnapd.log" >&2; die "vmsnapd exited"; }
        sleep 0.1
    done
    die "vmsnapd did not take its name (see $dir/vmsnapd.log)"
}

# Stops the processes whose pid files are in $1.
host_stop() {
    local dir=$1 f
    for f in "$dir"/vmsnapd.pid "$dir"/polkitd.pid "$dir"/bus.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    return 0
}

# Removes the domains whose names start with $1, and their images directory $2.
host_remove_domains() {
    local prefix=$1 images=$2 d
    virsh -c qemu:///system list --all --name 2>/dev/null | while read -r d; do
        case "$d" in
            "$prefix"*)
                virsh -c qemu:///system destroy --domain "$d" >/dev/null 2>&1 || true
                virsh -c qemu:///system undefine --checkpoints-metadata --domain "$d" >/dev/null 2>&1 \
                    || virsh -c qemu:///system undefine --domain "$d" >/dev/null 2>&1 || true
                ;;
        esac
    done
    [ -n "$images" ] && rm -rf -- "$images"
    return 0
}

# Removes test domains of earlier runs whose process is gone (vmsnaptest-<pid>-…).
host_remove_stale() {
    local d pid
    virsh -c qemu:///system list --all --name 2>/dev/null | while read -r d; do
        if [[ "$d" =~ ^vmsnaptest-([0-9]+)- ]]; then
            pid=${BASH_REMATCH[1]}
            if ! kill -0 "$pid" 2>/dev/null; then
                host_remove_domains "vmsnaptest-$pid-" "/var/tmp/vmsnaptest-$pid"
            fi
        fi
    done
    host_remove_faketime_leftovers
}

# libfaketime names its semaphore and shared memory after the wrapper's pid. A wrapper killed
# with SIGKILL (tests kill the services they started that way) leaves both behind, and a later
# wrapper that gets the same pid fails with "sem_open: File exists". Removes those whose
# process is gone.
host_remove_faketime_leftovers() {
    local f pid
    for f in /dev/shm/faketime_shm_* /dev/shm/sem.faketime_sem_*; do
        [ -e "$f" ] || continue
        pid=${f##*_}
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        kill -0 "$pid" 2>/dev/null || rm -f -- "$f"
    done
}

# Fetches the RPC protocol files of Debian's libvirt source package, which the table of
# procedures the service calls is checked against (tests/tests/protocol.rs), into
# /var/cache/vmsnap-test/libvirt-src once, and exports VMSNAP_LIBVIRT_PROTOCOL. Adds a
# deb-src entry for the machine's release when apt has none.
host_libvirt_protocol() {
    local dir=/var/cache/vmsnap-test/libvirt-src tmp codename upstream
    if [ ! -f "$dir/remote_protocol.x" ]; then
        if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
            log "adding a deb-src entry for $codename (libvirt's protocol files)"
            printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$codename" > /etc/apt/sources.list.d/vmsnap-test-src.sources
            apt-get update -qq || die "apt-get update failed"
        fi
        tmp=$(mktemp -d)
        if ! (cd "$tmp" && apt-get source --download-only -qq libvirt >&2); then
            # Seen with trixie's point-release upload 11.3.0-3+deb13u3: the mirror had its
            # upstream tarball but no .dsc. The tarball is all the check needs.
            upstream=$(dpkg-query -W -f='${Version}' libvirt-daemon | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')
            log "no source package of libvirt $upstream; fetching its upstream tarball"
            /usr/lib/apt/apt-helper download-file \
                "http://deb.debian.org/debian/pool/main/libv/libvirt/libvirt_${upstream}.orig.tar.xz" \
                "$tmp/libvirt_${upstream}.orig.tar.xz" >&2 \
                || { rm -rf "$tmp"; die "cannot fetch Debian's libvirt source package"; }
        fi
        tar -xJf "$tmp"/libvirt_*.orig.tar.xz -C "$tmp" --wildcards \
            '*/src/remote/remote_protocol.x' '*/src/remote/qemu_protocol.x' \
            '*/src/rpc/virkeepaliveprotocol.x' \
            || { rm -rf "$tmp"; die "libvirt's source package has no protocol files"; }
        mkdir -p "$dir"
        cp "$tmp"/libvirt-*/src/remote/remote_protocol.x "$tmp"/libvirt-*/src/remote/qemu_protocol.x \
            "$tmp"/libvirt-*/src/rpc/virkeepaliveprotocol.x "$dir"/
        ls "$tmp" | grep -E '\.dsc$|\.orig\.tar\.xz$' > "$dir/SOURCE"
        rm -rf "$tmp"
    fi
    export VMSNAP_LIBVIRT_PROTOCOL="$dir"
}

# The other Debian release's virtnbdbackup, for the upgrade test (tests/tests/upgrade.rs: a
# chain written by 1.9 and continued by 2.x): trixie's 2.x on bookworm, bookworm's 1.9 on
# trixie. Downloaded with apt from that release's signed index (a private list directory, the
# machine's sources untouched), unpacked below /var/cache/vmsnap-test/virtnbdbackup-<release>
# and run by this host's Python with this host's libraries; its dependencies come from this
# release. Exports VMSNAP_TEST_OTHER_VIRTNBDBACKUP: a directory with virtnbdbackup and
# virtnbdrestore.
host_other_virtnbdbackup() {
    local codename other dir tmp deb deps=() p tool
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    case "$codename" in
        bookworm) other=trixie ;;
        trixie) other=bookworm ;;
        *) die "no other Debian release's virtnbdbackup is known for $codename" ;;
    esac
    dir=/var/cache/vmsnap-test/virtnbdbackup-$other
    if [ ! -x "$dir/bin/virtnbdrestore" ]; then
        log "fetching Debian $other's virtnbdbackup (the upgrade test)"
        tmp=$(mktemp -d)
        mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/parts"
        printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n' \
            "$other" > "$tmp/sources.list"
        # An empty package status: on trixie the installed 2.x would otherwise be the candidate
        # (and not downloadable from bookworm). APT::Sandbox::User: the directories are root's.
        : > "$tmp/status"
        local apt_private=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/parts"
                           -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
                           -o "Dir::State::status=$tmp/status" -o APT::Sandbox::User=root)
        { apt-get "${apt_private[@]}" update -qq >&2 \
            && (cd "$tmp" && apt-get "${apt_private[@]}" download -qq virtnbdbackup >&2); } \
            || { rm -rf "$tmp"; die "cannot download Debian $other's virtnbdbackup"; }
        deb=$(ls "$tmp"/virtnbdbackup_*.deb)
        # Its Depends, as this release's packages (names only: versions and alternatives aside;
        # the interpreter is this release's python3, whatever version the package was built for).
        for p in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' \
                   | sed -e 's/([^)]*)//g' -e 's/|.*//' -e 's/:any//' -e 's/ //g' \
                   | grep -vE '^python3(\.[0-9]+)?$'); do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || deps+=("$p")
        done
        if [ ${#deps[@]} -gt 0 ]; then
            log "installing what Debian $other's virtnbdbackup needs: ${deps[*]}"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${deps[@]}" >&2 \
                || { rm -rf "$tmp"; die "cannot install ${deps[*]}"; }
        fi
        rm -rf "$dir"
        mkdir -p "$dir/bin"
        dpkg-deb -x "$deb" "$dir/root"
        for tool in virtnbdbackup virtnbdrestore; do
            printf '#!/bin/sh\n# Debian %s'"'"'s %s (%s), run with this host'"'"'s Python.\nPYTHONPATH=%s exec /usr/bin/python3 %s "$@"\n' \
                "$other" "$tool" "$(basename "$deb")" "$dir/root/usr/lib/python3/dist-packages" \
                "$dir/root/usr/bin/$tool" > "$dir/bin/$tool"
            chmod 755 "$dir/bin/$tool"
        done
        rm -rf "$tmp"
    fi
    "$dir/bin/virtnbdbackup" -V >/dev/null 2>&1 \
        || die "Debian $other's virtnbdbackup does not run here: $("$dir/bin/virtnbdbackup" -V 2>&1 | tail -n 1)"
    export VMSNAP_TEST_OTHER_VIRTNBDBACKUP="$dir/bin"
}
