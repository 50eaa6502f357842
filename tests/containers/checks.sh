#!/usr/bin/env bash
# The system-container suite's checks, run as root inside a booted Debian container (by
# tests/containers/run) as a user of the installed package would: the real systemd unit with
# its sandbox, D-Bus activation, logind sessions, polkitd, journald and libvirtd.
#
#   checks.sh DEB BLOCK_DEVICE OTHER_FS
#
# DEB is the package to install, BLOCK_DEVICE a loop device given to the container (a guest's
# qcow2 lives on it), OTHER_FS a directory on another mounted file system (a backup root).
# Prints "ok - NAME" or "FAILED - NAME" with the check's log, then "N passed, N failed".
# Single quotes keep $… for the shell they are meant for (a user's login shell, tmux, dpkg).
# shellcheck disable=SC2016
set -uo pipefail
DEB=$1 BLOCK_DEVICE=$2 OTHER_FS=$3
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 TERM=xterm
LOGS=/root/checks; rm -rf "$LOGS"; mkdir -p "$LOGS"
IMAGES=/var/lib/libvirt/images
REFS=/root/refs; mkdir -p "$REFS"
OUT=/var/lib/vmsnap
declare -i PASSED=0 FAILED=0

# Runs "$@" with errexit in a subshell (not in a tested context, where bash would ignore it).
check() {
    local name=$1; shift
    local log
    log="$LOGS/$(printf '%02d' $((PASSED + FAILED + 1)))-${name//[^A-Za-z0-9]/_}.log"
    ( set -eo pipefail; "$@" ) > "$log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then
        PASSED+=1; echo "ok - $name"
    else
        FAILED+=1; echo "FAILED - $name (exit $rc)"
        tail -n 30 "$log" | sed 's/^/    | /'
    fi
}

# expect_exit CODE CMD…: CMD must exit with CODE; its output stays in the log and in $LAST.
expect_exit() {
    local want=$1; shift
    set +e; LAST=$("$@" 2>&1); local got=$?; set -e
    printf '%s\n' "$LAST"
    [ "$got" -eq "$want" ] || { echo "expected exit $want, got $got: $*"; return 1; }
}
contains() { grep -qF -- "$1" <<<"$LAST" || { echo "missing in output: $1"; return 1; }; }
# refute CMD…: CMD must fail. (errexit ignores `! CMD` and all but the last command of an
# `&&` list, so the checks use this and one assertion per line.)
refute() { if "$@"; then echo "unexpectedly succeeded: $*"; return 1; fi; }

# --- guests -------------------------------------------------------------------------------

define_guest() { # NAME DISK TYPE(file|block)
    local attr=file
    [ "$3" = block ] && attr=dev
    cat > "/root/$1.xml" <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>48</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='$3' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source $attr='$2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
EOF
    virsh -q define "/root/$1.xml" >/dev/null
}

# write_data GUEST DISK PATTERN OFFSET_MIB LENGTH_MIB: writes while the guest is shut off
# (QEMU holds the image's lock while it runs), and starts it again if it was running.
write_data() {
    local state
    state=$(virsh domstate "$1")
    [ "$state" = running ] && virsh -q destroy "$1" >/dev/null
    qemu-io -f qcow2 -c "write -P $3 ${4}M ${5}M" "$2" >/dev/null
    [ "$state" = running ] && virsh -q start "$1" >/dev/null
    return 0
}

# The guest-visible content of a disk right now, for byte-for-byte comparison.
reference() { qemu-img convert -U -f qcow2 -O raw "$1" "$REFS/$2.raw"; }

# restore_and_compare GUEST POINT REF TARGET: restores GUEST up to POINT into TARGET and
# compares the restored image with the reference REF.
restore_and_compare() {
    local until=()
    [ -n "$2" ] && until=(--until "$2")
    vmsnapctl restore "$1" --output "${OUTPUT:-$OUT}" "${until[@]}" --target "$4"
    local image
    image=$(find "$4" -maxdepth 1 -type f ! -name '*.xml' ! -name '*.log' | head -n 1)
    [ -n "$image" ] || { echo "nothing restored in $4"; ls -la "$4"; return 1; }
    qemu-img compare -U -f qcow2 -F raw "$image" "$REFS/$3.raw"
}

points_of() { vmsnapctl backups "$1" --output "${2:-$OUT}"; }
# How many points GUEST has under the default root, in all its chains.
count_points() { points_of "$1" | grep -cE '^  virtnbdbackup\.[0-9]+ '; }

# --- the checks ---------------------------------------------------------------------------

install_package() {
    apt-get install -y -q "$DEB" | tail -n 5
    [ "$(dpkg-query -W -f='${Status}' vmsnap)" = 'install ok installed' ]
    # Installed, not started: D-Bus activation and the timer start it.
    [ "$(systemctl is-active vmsnapd)" != active ]
    systemctl cat vmsnapd.service >/dev/null
}

prepare_host() {
    # The containers' cgroup hierarchy is read-only for libvirt (system-containers.md).
    echo 'cgroup_controllers = [ ]' >> /etc/libvirt/qemu.conf
    systemctl restart libvirtd
    useradd --create-home --shell /bin/bash --groups libvirt lvuser
    useradd --create-home --shell /bin/bash plain
    useradd --create-home --shell /bin/bash --groups sudo admin
    echo 'admin:vmsnap-admin-pw' | chpasswd
    qemu-img create -q -f qcow2 "$IMAGES/ct-run.qcow2" 64M
    qemu-img create -q -f qcow2 "$IMAGES/ct-off.qcow2" 64M
    qemu-img create -q -f qcow2 "$IMAGES/ct-slow.qcow2" 1G
    qemu-img create -q -f qcow2 -o compat=0.10 "$IMAGES/ct-v2.qcow2" 64M
    qemu-img create -q -f qcow2 "$BLOCK_DEVICE" 200M
    define_guest ct-run "$IMAGES/ct-run.qcow2" file
    define_guest ct-off "$IMAGES/ct-off.qcow2" file
    define_guest ct-slow "$IMAGES/ct-slow.qcow2" file
    define_guest ct-v2 "$IMAGES/ct-v2.qcow2" file
    define_guest ct-blk "$BLOCK_DEVICE" block
    write_data ct-run "$IMAGES/ct-run.qcow2" 0x11 0 8
    write_data ct-off "$IMAGES/ct-off.qcow2" 0x22 4 8
    write_data ct-blk "$BLOCK_DEVICE" 0x33 0 16
    write_data ct-slow "$IMAGES/ct-slow.qcow2" 0x44 0 900
    virsh -q start ct-run >/dev/null
    [ "$(virsh domstate ct-run)" = running ]
}

first_call_activates() {
    [ "$(systemctl is-active vmsnapd)" != active ]
    vmsnapctl status ct-run ct-off
    expect_exit 0 systemctl status vmsnapd --no-pager
    contains 'Active: active (running)'
}

exposure_at_most_2() {
    local line score
    line=$(systemd-analyze security vmsnapd.service --no-pager | tail -n 1)
    echo "$line"
    score=$(sed -n 's/.*vmsnapd.service: \([0-9.]*\).*/\1/p' <<<"$line")
    [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'
}

full_backups() {
    reference "$IMAGES/ct-run.qcow2" ct-run.0
    reference "$IMAGES/ct-off.qcow2" ct-off.0
    vmsnapctl backup ct-run ct-off --output "$OUT"
    [ "$(virsh domstate ct-off)" = "shut off" ]
    [ "$(virsh domstate ct-run)" = running ]
}

incremental_backups() {
    write_data ct-run "$IMAGES/ct-run.qcow2" 0x55 20 6
    write_data ct-off "$IMAGES/ct-off.qcow2" 0x66 30 3
    reference "$IMAGES/ct-run.qcow2" ct-run.1
    reference "$IMAGES/ct-off.qcow2" ct-off.1
    expect_exit 0 vmsnapctl backup ct-run ct-off --output "$OUT"
    [ "$(grep -c 'succeeded (inc)' <<<"$LAST")" -eq 2 ]
    [ "$(virsh domstate ct-off)" = "shut off" ]
}

listed_and_verified() {
    expect_exit 0 points_of ct-run
    contains "virtnbdbackup.0    full"; contains "virtnbdbackup.1    inc"
    expect_exit 0 points_of ct-off
    contains "virtnbdbackup.1    inc"
    expect_exit 0 vmsnapctl verify ct-run ct-off --output "$OUT"
    [ "$(grep -cE 'virtnbdbackup\.[01]: ok' <<<"$LAST")" -eq 4 ]
    # Deep, under the unit's sandbox: the newest points rebuilt and compared with the index's
    # reading over NBD.
    expect_exit 0 vmsnapctl verify ct-run ct-off --output "$OUT" --deep
    [ "$(grep -c 'identical to the index' <<<"$LAST")" -eq 2 ]
}

every_point_restores() {
    local g p
    for g in ct-run ct-off; do
        for p in 0 1; do
            restore_and_compare "$g" "virtnbdbackup.$p" "$g.$p" "$IMAGES/restore/$g-$p"
        done
    done
}

# File browsing under the unit's sandbox: the reader runs as vmsnap-files (the package made
# the user), and a file comes back as it was.
files_under_the_sandbox() {
    cp /root/fs-guest.qcow2 "$IMAGES/ct-fs.qcow2"
    define_guest ct-fs "$IMAGES/ct-fs.qcow2" file
    getent passwd vmsnap-files
    expect_exit 0 vmsnapctl backup ct-fs --output "$OUT"
    expect_exit 0 vmsnapctl files ct-fs --output "$OUT" ls
    contains 'ext4 "guestroot"'
    expect_exit 0 vmsnapctl files ct-fs --output "$OUT" ls --volume 0 /notes
    contains "hello.txt"
    expect_exit 0 vmsnapctl files ct-fs --output "$OUT" get /notes/hello.txt --target "$OUT/extracted"
    [ "$(cat "$OUT/extracted/hello.txt")" = "hello from the guest" ]
    # The whole disk over NBD from the unit's runtime directory, as the guest (shut off and
    # unchanged since) has it.
    local uri
    # exec: the coprocess is vmsnapctl itself, so that killing it ends the command.
    coproc EXPORT { exec vmsnapctl files ct-fs --output "$OUT" export 2>/dev/null; }
    read -r -t 60 uri <&"${EXPORT[0]}"
    echo "export: $uri"
    [[ "$uri" == "nbd+unix:///?socket=/run/vmsnapd/exports/files-"* ]]
    qemu-img compare -f raw -F qcow2 "$uri" "$IMAGES/ct-fs.qcow2"
    kill "$EXPORT_PID"
    wait "$EXPORT_PID" || true
    # Nothing of the sessions is left: no reader, no scratch, no export.
    for _ in $(seq 100); do pgrep -x vmsnap-guestfs >/dev/null || break; sleep 0.1; done
    refute pgrep -x vmsnap-guestfs
    refute compgen -G '/var/lib/vmsnapd/scratch/files-*'
    refute compgen -G '/run/vmsnapd/exports/files-*'
}

restore_outside_sandbox_refused() {
    expect_exit 14 vmsnapctl restore ct-off --output "$OUT" --target /var/lib/rs
    contains "/var/lib/rs"; contains "ReadWritePaths=-/var/lib/rs"
    # Refused before anything was written.
    [ ! -e /var/lib/rs ]
    refute grep -q 'vmsnap-restore' <<<"$(ls -a /var/lib)"
}

# The documented way to let the service write somewhere else: a drop-in, then a restart.
allow_path() {
    mkdir -p "$1" /etc/systemd/system/vmsnapd.service.d
    printf '[Service]\nReadWritePaths=-%s\n' "$1" > "/etc/systemd/system/vmsnapd.service.d/$2.conf"
    systemctl daemon-reload
    systemctl restart vmsnapd
}

restore_after_drop_in() {
    allow_path /var/lib/rs restore-target
    restore_and_compare ct-off "" ct-off.1 /var/lib/rs
    # With the documented "-", a removed directory does not keep the service from starting.
    rm -rf /var/lib/rs
    systemctl restart vmsnapd
    systemctl is-active vmsnapd
}

backup_root_elsewhere() {
    expect_exit 14 vmsnapctl backup ct-off --output "$OTHER_FS/vms"
    contains "ReadWritePaths=-$OTHER_FS/vms"
    [ ! -e "$OTHER_FS/vms" ]
    allow_path "$OTHER_FS" backup-root
    # It is a file system of its own.
    [ "$(findmnt -n -o TARGET -T "$OTHER_FS")" = "$OTHER_FS" ]
    vmsnapctl backup ct-off --output "$OTHER_FS/vms"
    OUTPUT="$OTHER_FS/vms" restore_and_compare ct-off "" ct-off.1 "$IMAGES/restore/other-fs"
}

block_device_guest() {
    # Shut off: the service reads the qcow2 on the device itself.
    expect_exit 0 vmsnapctl status ct-blk --json
    contains "\"path\": \"$BLOCK_DEVICE\""; contains '"overallStatus": 0'
    refute grep -q '"error"' <<<"$LAST"
    if [ "$(virtnbdbackup -V | cut -d. -f1)" -lt 2 ]; then
        # virtnbdbackup 1.9 skips every block device: said so, never a backup that lacks it.
        contains "does not back up block devices"
        expect_exit 10 vmsnapctl backup ct-blk --output "$OTHER_FS/vms"
        contains "vda: block device: virtnbdbackup 1.9"
        [ "$(virsh domstate ct-blk)" = "shut off" ]
        return 0
    fi
    reference "$BLOCK_DEVICE" ct-blk.0
    vmsnapctl backup ct-blk --output "$OTHER_FS/vms"
    write_data ct-blk "$BLOCK_DEVICE" 0x77 100 10
    reference "$BLOCK_DEVICE" ct-blk.1
    expect_exit 0 vmsnapctl backup ct-blk --output "$OTHER_FS/vms"
    contains "succeeded (inc)"
    vmsnapctl verify ct-blk --output "$OTHER_FS/vms"
    OUTPUT="$OTHER_FS/vms" restore_and_compare ct-blk virtnbdbackup.0 ct-blk.0 "$IMAGES/restore/blk-0"
    OUTPUT="$OTHER_FS/vms" restore_and_compare ct-blk virtnbdbackup.1 ct-blk.1 "$IMAGES/restore/blk-1"
}

set_backup_env() {
    sed -i -e "s|^VMSNAP_DOMAINS=.*|VMSNAP_DOMAINS=$1|" -e "s|^VMSNAP_OUTPUT=.*|VMSNAP_OUTPUT=$OUT|" \
        /etc/vmsnap/backup.env
}

timer_backs_up() {
    local before
    before=$(count_points ct-off)
    set_backup_env "ct-off"
    systemctl start vmsnap-backup.service
    [ "$(count_points ct-off)" -eq $((before + 1)) ]
}

timer_fails_with_a_domain() {
    local before
    before=$(count_points ct-off)
    set_backup_env "ct-off ct-v2"
    refute systemctl start vmsnap-backup.service
    [ "$(systemctl is-failed vmsnap-backup.service)" = failed ]
    journalctl -u vmsnap-backup.service --no-pager | tail -n 5
    # The other domain was still backed up.
    [ "$(count_points ct-off)" -eq $((before + 1)) ]
    systemctl enable --now vmsnap-backup.timer
    expect_exit 0 systemctl list-timers --all --no-pager vmsnap-backup.timer
    local line
    line=$(grep 'vmsnap-backup.timer' <<<"$LAST")
    [ -n "$line" ]
    [[ $line != n/a* ]]
}

journal_fields() {
    local job
    expect_exit 0 journalctl -u vmsnapd --no-pager -p err -o cat DOMAIN=ct-v2
    contains 'failed'
    job=$(journalctl -u vmsnapd --no-pager -o export DOMAIN=ct-v2 | sed -n 's/^JOB=//p' | tail -n 1)
    [ -n "$job" ]
    expect_exit 0 journalctl -u vmsnapd --no-pager -o cat "JOB=$job"
    contains 'ct-v2'
    refute grep -q '^F_' <<<"$(journalctl -u vmsnapd --no-pager -o export)"
}

# as USER CMD: runs CMD in a login shell of USER, a real logind session (pam_systemd).
# Backup health for Prometheus under the real unit: the package ships the rules, and with
# metrics_dir set the sandboxed service writes Debian's node_exporter directory, readable by all.
metrics_through_the_sandbox() {
    local prom=/var/lib/prometheus/node-exporter/vmsnap.prom want='vmsnap_backup_last_attempt_success{domain="ct-off"} 1'
    test -f /usr/share/vmsnap/prometheus/vmsnap.rules.yml
    mkdir -p /var/lib/prometheus/node-exporter
    printf 'metrics_dir = "/var/lib/prometheus/node-exporter"\n' >> /etc/vmsnap/vmsnapd.toml
    systemctl restart vmsnapd
    vmsnapctl backup ct-off --output "$OUT"
    for _ in $(seq 1 150); do
        grep -qF "$want" "$prom" 2>/dev/null && break
        sleep 0.2
    done
    cat "$prom"
    grep -qF "$want" "$prom"
    [ "$(stat -c %a "$prom")" = 644 ]
}

as() { su - "$1" -c "$2"; }

group_member_backs_up() {
    expect_exit 0 as lvuser 'loginctl show-session "$XDG_SESSION_ID" -p Active -p Class'
    grep -qx 'Active=yes' <<<"$LAST"
    as lvuser "vmsnapctl --no-ask-password backup ct-off --output $OUT"
}

outsider_refused() {
    expect_exit 12 as plain "timeout 60 vmsnapctl --no-ask-password backup ct-off --output $OUT"
    contains "not allowed"
}

no_ask_password_refuses_at_once() {
    expect_exit 12 as admin "timeout 60 vmsnapctl --no-ask-password scrub ct-run --type all"
    contains "not allowed"
    [ -n "$(virsh checkpoint-list ct-run --name)" ]
}

# tmux_wait SESSION TEXT: waits until TEXT is on SESSION's screen.
tmux_wait() {
    for _ in $(seq 1 300); do
        tmux capture-pane -p -t "$1" | grep -qF -- "$2" && return 0
        sleep 0.2
    done
    # The screen's lines with text (the log's tail would show only its empty bottom).
    tmux capture-pane -p -t "$1" | grep -v '^[[:space:]]*$'
    echo "never appeared on the terminal: $2"
    return 1
}

password_on_a_tty_authorizes_scrub() {
    rm -f /tmp/scrub.rc
    # A login shell on a terminal (`su -c` would run the command without one).
    tmux new-session -d -s pk -x 160 -y 40 "su - admin"
    # The shell answers (the sum shows only in its output, not in the typed line).
    tmux send-keys -t pk 'echo shell-$((40 + 2))' Enter
    tmux_wait pk 'shell-42'
    tmux send-keys -t pk 'vmsnapctl scrub ct-run --type all; echo $? > /tmp/scrub.rc' Enter
    tmux_wait pk 'Password:'
    tmux send-keys -t pk 'vmsnap-admin-pw' Enter
    for _ in $(seq 1 300); do [ -s /tmp/scrub.rc ] && break; sleep 0.2; done
    tmux capture-pane -p -t pk
    tmux kill-session -t pk
    [ "$(cat /tmp/scrub.rc)" = 0 ]
    [ -z "$(virsh checkpoint-list ct-run --name)" ]
}

# A user with no rights holds four reads of a root-only folder at password prompts that nobody
# answers (a pkttyagent of its own for each call, in logind sessions, calls that allow
# interaction, as the issue reproduced it): root's read is answered all the same, since a read takes a worker
# only once authorized and root has workers of its own.
prompts_that_never_answer_hold_no_read() {
    install -d -m 0700 "$OUT/private"
    trap 'for i in 1 2 3 4; do tmux kill-session -t "rd$i" 2>/dev/null; done; rmdir "$OUT/private"' EXIT
    local i call
    call="busctl call --allow-interactive-authorization=yes --timeout=600 org.vmsnap.VMSnap1"
    call+=" /org/vmsnap/VMSnap1 org.vmsnap.VMSnap1.Manager Status 'asa{sv}' 1 ct-run 1 output s"
    call+=" $OUT/private"
    for i in 1 2 3 4; do
        tmux new-session -d -s "rd$i" -x 160 -y 40 "su - plain"
        tmux send-keys -t "rd$i" 'echo shell-$((40 + 2))' Enter
        tmux_wait "rd$i" 'shell-42'
        # pkttyagent answers for one process (its parent, unless --process says which): the
        # call's, which waits until the agent is there and then becomes busctl (exec: same pid).
        tmux send-keys -t "rd$i" \
            "(sleep 2; exec $call >/dev/null 2>/tmp/rd$i.err) & pkttyagent --process \$! --fallback" Enter
        tmux_wait "rd$i" 'Password:' || { cat "/tmp/rd$i.err"; return 1; }
    done
    expect_exit 0 timeout 60 vmsnapctl status ct-run --output "$OUT/private"
    contains ct-run
}

job_property() { busctl get-property org.vmsnap.VMSnap1 "$1" org.vmsnap.VMSnap1.Job "$2" | cut -d' ' -f2-; }

stop_during_backup() {
    reference "$IMAGES/ct-slow.qcow2" ct-slow.0
    vmsnapctl backup ct-slow --output "$OUT"
    write_data ct-slow "$IMAGES/ct-slow.qcow2" 0x88 0 900
    reference "$IMAGES/ct-slow.qcow2" ct-slow.1
    local before job done=0
    before=$(find "$OUT/ct-slow" -type f -printf '%P %s\n' | sort)
    job=$(vmsnapctl backup ct-slow --output "$OUT" --no-wait)
    for _ in $(seq 1 600); do
        done=$(job_property "$job" BytesDone)
        [ "${done:-0}" -gt 0 ] && break
        sleep 0.1
    done
    [ "$(job_property "$job" State)" = '"running"' ]
    systemctl stop vmsnapd
    journalctl -u vmsnapd --no-pager -o cat -n 15
    [ "$(virsh domstate ct-slow)" = "shut off" ]
    # The chain folder is as it was, except logs.
    [ "$(find "$OUT/ct-slow" -type f ! -name '*.log' -printf '%P %s\n' | sort)" \
        = "$(grep -v '\.log ' <<<"$before")" ]
    journalctl -u vmsnapd --no-pager -o cat "JOB=${job##*/}" | grep -Eq 'cancelled|failed'
    restore_and_compare ct-slow "" ct-slow.0 "$IMAGES/restore/slow-before"
    # The next call activates the service again and backs up.
    vmsnapctl backup ct-slow --output "$OUT"
    systemctl is-active vmsnapd
    restore_and_compare ct-slow "" ct-slow.1 "$IMAGES/restore/slow-after"
}

libvirtd_restart() {
    vmsnapctl status ct-off >/dev/null
    systemctl restart libvirtd
    vmsnapctl status ct-off
    vmsnapctl backup ct-off --output "$OUT"
}

remove_leaves_nothing_running() {
    apt-get remove -y -q vmsnap | tail -n 3
    refute pgrep -x vmsnapd
    [ "$(systemctl is-active vmsnapd)" != active ]
    # The timer the administrator had enabled is stopped too.
    [ "$(systemctl is-active vmsnap-backup.timer)" != active ]
    # Nothing can activate it any more.
    refute busctl call org.vmsnap.VMSnap1 /org/vmsnap/VMSnap1 org.freedesktop.DBus.Peer Ping
    refute pgrep -x vmsnapd
    [ -n "$(find "$OUT/ct-off" -name '*.data')" ]
}

purge_keeps_backups() {
    apt-get purge -y -q vmsnap | tail -n 3
    [ -n "$(find "$OUT/ct-off" "$OTHER_FS/vms" -name '*.data')" ]
    [ ! -e /var/lib/vmsnapd ]
    [ ! -e /etc/vmsnap ]
    refute dpkg-query -W -f='${Status}' vmsnap
}

check "apt installs the package without starting it" install_package
check "test guests are defined and one runs" prepare_host
check "the first vmsnapctl call activates the service" first_call_activates
check "systemd-analyze security exposure is at most 2.0" exposure_at_most_2
check "full backups of a running and a shut-off guest" full_backups
check "incremental backups after data changed" incremental_backups
check "backups lists the points and verify passes" listed_and_verified
check "every point restores byte for byte" every_point_restores
check "files of a point are listed and copied out by the sandboxed reader" files_under_the_sandbox
check "a restore outside the writable paths is refused first, naming the way" restore_outside_sandbox_refused
check "after the documented drop-in that restore works" restore_after_drop_in
check "a backup root on another file system: refused, then allowed" backup_root_elsewhere
check "a guest on a block device: status, backups, verify, restores (1.9: refused, said why)" block_device_guest
check "the timer's service backs up what backup.env names" timer_backs_up
check "the timer's service fails when a domain fails; the timer has a next run" timer_fails_with_a_domain
check "journal fields JOB and DOMAIN, failures at priority err" journal_fields
check "backup health metrics reach node_exporter's directory through the sandbox" metrics_through_the_sandbox
check "a libvirt-group member backs up without a password" group_member_backs_up
check "a user outside the group is refused" outsider_refused
check "--no-ask-password without a rule refuses at once" no_ask_password_refuses_at_once
check "an administrator's password on a TTY authorizes a scrub" password_on_a_tty_authorizes_scrub
check "four password prompts nobody answers do not hold up root's reads" prompts_that_never_answer_hold_no_read
check "systemctl stop during a backup keeps the chain; the next call works" stop_during_backup
check "systemctl restart libvirtd between calls" libvirtd_restart
check "apt remove leaves nothing of the service running" remove_leaves_nothing_running
check "apt purge keeps the backups and removes the service's state" purge_keeps_backups

# Guests without an OS ignore the ACPI shutdown that libvirt-guests sends at poweroff, which
# would hold the container's shutdown for minutes.
for guest in $(virsh list --name 2>/dev/null); do virsh -q destroy "$guest" >/dev/null 2>&1; done

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
