#!/usr/bin/env bash
# ovslab as a Debian package and a systemd service, proven on a real
# systemd: a Debian rootfs (built once with debootstrap and cached), booted
# from a copy with systemd-nspawn, the package installed in it with `apt
# install ./ovslab_….deb`, and driven through `nsenter -t <container PID 1>
# -a …`.
#
# Asserts: `make install` into a DESTDIR installs the binaries, unit, seed
# lab, /etc/default/ovslabd, manual pages, completions and schema; `apt
# install` returns with the service enabled and running and the seed lab
# up and healthy, the group ovslab made, bash completing the running lab;
# `ovslab check` passes inside; an edited lab file plus `systemctl reload`
# is applied, a new lab file comes up on reload and goes once removed;
# `systemctl stop` leaves no lab namespace and no Open vSwitch
# process; `journalctl -u ovslabd` has the daemon's log. The unit's
# hardening is in force and the lab works under it: `systemd-analyze
# verify` is clean, the daemon and its OVS processes run with the unit's
# capability bounding set, seccomp filter, no new privileges and limits, the
# socket is 0660 group ovslab and a member of ovslab may use it while
# others may not, a TCP trace and a restart of a killed ovs-vswitchd work
# under it, a lab left by ovslabd run by hand is adopted, and no Open
# vSwitch log has a denied call. Then the package's life: an upgrade to a
# rebuilt package (apt install) restarts the daemon and keeps both labs
# running (the same Open vSwitch and dnsmasq processes, no ping lost), the
# new daemon adopting them; `apt remove` stops it (even one started with
# OVSLABD_ON_EXIT=keep) and leaves no lab namespace, process, socket or
# binary (the conffiles stay, as Debian has it); `apt purge` removes the configuration and the run state. An
# Open vSwitch the host itself runs (the system ovsdb-server with a bridge
# of its own) is untouched throughout. The container is stopped by its pid
# and its cgroup removed whatever happens.
#
# Needs root and the packages target/debian/ovslab_*.deb and
# target/debian-upgrade/ovslab_*.deb (make test-container builds them).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${OVSLAB_ROOTFS_CACHE:-/var/cache/ovslab-test-rootfs}
MIRROR=${OVSLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,openvswitch-switch,openvswitch-common,iproute2,iptables,ipset,tcpdump,procps,iputils-ping,kmod,dnsmasq-base,udhcpc,keepalived
# The stamp names what the cache was built from: change either, and it is
# built again.
STAMP="$SUITE $PACKAGES"

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# Host tools, installed only when missing.
missing=""
for p in debootstrap systemd-container; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing:$missing"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi

# The cached rootfs: built once, then only copied.
if [ "$(cat "$CACHE/.ovslab-ready" 2>/dev/null)" != "$STAMP" ]; then
  say "building the Debian $SUITE rootfs in $CACHE (once)"
  rm -rf "$CACHE.tmp"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$CACHE.tmp" "$MIRROR"
  # No package may start a service while installing; no system-wide OVS at
  # boot (ovslabd runs each node's own).
  printf '#!/bin/sh\nexit 101\n' >"$CACHE.tmp/usr/sbin/policy-rc.d"
  chmod +x "$CACHE.tmp/usr/sbin/policy-rc.d"
  for unit in openvswitch-switch ovsdb-server ovs-vswitchd; do
    ln -sf /dev/null "$CACHE.tmp/etc/systemd/system/$unit.service"
  done
  echo ovslab-test >"$CACHE.tmp/etc/hostname"
  rm -rf "$CACHE"
  mv "$CACHE.tmp" "$CACHE"
  echo "$STAMP" >"$CACHE/.ovslab-ready"
fi

deb=$(ls target/debian/ovslab_*.deb 2>/dev/null | head -1 || true)
upgrade=$(ls target/debian-upgrade/ovslab_*.deb 2>/dev/null | head -1 || true)
[ -f "$deb" ] && [ -f "$upgrade" ] || fail "no packages in target/debian and target/debian-upgrade: run make test-container"

scratch=$(mktemp -d /var/tmp/ovslab-container.XXXXXX)
dest=$(mktemp -d /var/tmp/ovslab-destdir.XXXXXX)
# The cgroup hierarchies nspawn uses: the unified one (cgroup v2), or on a
# hybrid host like this one the named `systemd` v1 hierarchy and the
# unified one when mounted.
cgroups=()
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  cgroups=(/sys/fs/cgroup/ovslab-test-$$)
else
  for h in systemd unified; do
    case $(stat -fc %T "/sys/fs/cgroup/$h" 2>/dev/null) in
      cgroupfs | cgroup2fs) cgroups+=("/sys/fs/cgroup/$h/ovslab-test-$$") ;;
    esac
  done
fi
nspawn=""
cleanup() {
  local rc=$?
  if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
    kill -TERM "$nspawn" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn" 2>/dev/null || true
    wait "$nspawn" 2>/dev/null || true
  fi
  for cgroup in "${cgroups[@]}"; do
    # Children first; a cgroup only goes once it is empty.
    [ -d "$cgroup" ] && find "$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -e "$scratch.log" ]; then
    echo "--- the container's console:" >&2
    tail -30 "$scratch.log" >&2
  fi
  rm -rf "$scratch" "$scratch.log" "$dest"
  exit $rc
}
trap cleanup EXIT

say "make install into a DESTDIR"
out=$(make --no-print-directory install DESTDIR="$dest" 2>&1) || fail "make install: $out"
for f in usr/local/bin/ovslab usr/local/bin/ovslabd etc/systemd/system/ovslabd.service \
  etc/ovslab/labs/seed.yaml etc/default/ovslabd usr/local/share/man/man1/ovslab.1 \
  usr/local/share/man/man5/ovslab-topology.5 usr/local/share/man/man8/ovslabd.8 \
  usr/local/share/bash-completion/completions/ovslab usr/local/share/zsh/site-functions/_ovslab \
  usr/local/share/fish/vendor_completions.d/ovslab.fish usr/local/share/ovslab/topology.schema.json; do
  [ -s "$dest/$f" ] || fail "make install did not install /$f"
done
grep -q '^ExecStart=/usr/local/bin/ovslabd ' "$dest/etc/systemd/system/ovslabd.service" ||
  fail "make install's unit does not start /usr/local/bin/ovslabd"

say "copying the rootfs"
cp -a "$CACHE/." "$scratch/"
# A normal system: packages may start their services (the cache forbids it
# while it is built), and the host runs an Open vSwitch database of its
# own, which ovslab must leave alone.
rm -f "$scratch/usr/sbin/policy-rc.d"
rm -f "$scratch/etc/systemd/system/ovsdb-server.service"
cp "$deb" "$upgrade" "$scratch/var/tmp/"

say "booting it"
[ "${#cgroups[@]}" -gt 0 ] || fail "no cgroup hierarchy for the container"
(
  # A cgroup of its own, so that two containers never collide.
  for cgroup in "${cgroups[@]}"; do
    mkdir "$cgroup"
    echo "$BASHPID" >"$cgroup/cgroup.procs"
  done
  exec systemd-nspawn -b --private-network --register=no --keep-unit \
    --capability=CAP_IPC_LOCK --console=passive -D "$scratch" >"$scratch.log" 2>&1
) &
nspawn=$!
# The container's PID 1: the descendant of nspawn that is pid 1 in its own
# pid namespace (the last NSpid field).
descendants() {
  local p=$1 c
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}
pid1=""
for _ in $(seq 300); do
  for p in $(descendants "$nspawn"); do
    if awk '/^NSpid:/ { exit !($NF == 1 && NF > 2) }' "/proc/$p/status" 2>/dev/null; then
      pid1=$p
      break
    fi
  done
  [ -n "$pid1" ] && break
  sleep 0.1
done
[ -n "$pid1" ] || fail "the container did not start (see $scratch.log)"
inside() { nsenter -t "$pid1" -a "$@"; }
# Whether a namespace matching the regex exists inside the container.
has_netns() { inside ip netns list 2>/dev/null | grep -q "$1"; }
# Waits up to 30 s until a namespace matching the regex exists (`present`)
# or none does (`absent`); returns 1 if it never happened.
wait_netns() {
  local want=$1 regex=$2
  for _ in $(seq 300); do
    if has_netns "$regex"; then [ "$want" = present ] && return 0
    else [ "$want" = absent ] && return 0; fi
    sleep 0.1
  done
  return 1
}
# Until systemd itself runs there and answers on its bus.
for _ in $(seq 600); do
  case $(readlink "/proc/$pid1/exe" 2>/dev/null) in */systemd) break ;; esac
  sleep 0.1
done
for _ in $(seq 600); do
  inside systemctl is-system-running >/dev/null 2>&1 && break
  case $(inside systemctl is-system-running 2>&1) in *"Failed to connect"*) sleep 0.1 ;; *) break ;; esac
done
state=$(timeout 180 nsenter -t "$pid1" -a systemctl is-system-running --wait || true)
say "container PID 1 is $pid1; system state: $state"

say "the host's own Open vSwitch: the system ovsdb-server, with a bridge of its own"
inside systemctl start ovsdb-server.service || fail "the system ovsdb-server did not start"
inside ovs-vsctl --no-wait add-br br-host
host_ovsdb=$(inside cat /run/openvswitch/ovsdb-server.pid)
host_ovs_untouched() {
  inside systemctl is-active --quiet ovsdb-server.service || fail "$1: the host's ovsdb-server.service is not active"
  [ "$(inside cat /run/openvswitch/ovsdb-server.pid)" = "$host_ovsdb" ] ||
    fail "$1: the host's ovsdb-server was restarted"
  inside ovs-vsctl --no-wait br-exists br-host || fail "$1: the host's bridge br-host is gone"
}

say "apt install ./${deb##*/}"
has_netns '^seed\.' && fail "lab namespaces before the install"
started=$(date +%s%N)
out=$(inside sh -c "cd /var/tmp && DEBIAN_FRONTEND=noninteractive apt-get install -y ./${deb##*/}" 2>&1) ||
  fail "apt install failed: $out"
say "apt install returned after $((($(date +%s%N) - started) / 1000000)) ms"
# The service was started by the package, which returns only once
# ovslabd said READY=1: the seed lab is up.
[ "$(inside systemctl is-enabled ovslabd)" = enabled ] || fail "the package did not enable ovslabd"
inside systemctl is-active --quiet ovslabd || fail "the package did not start ovslabd"
has_netns '^seed\.compute1' || fail "the seed lab was not up when the install returned"
status=$(inside systemctl show -p StatusText --value ovslabd)
say "status: $status"
case $status in "1 lab, 4 instances, all healthy") ;; *) fail "STATUS= says: $status" ;; esac
inside getent group ovslab >/dev/null || fail "the package did not make the group ovslab"
say "$(inside ovslab --version)"
# A member of ovslab and someone who is not, to try the API socket as.
inside useradd --no-create-home --groups ovslab member
inside useradd --no-create-home outsider
# The packaged completion asks the running daemon for its labs and targets.
completes() {
  inside bash -c "source /usr/share/bash-completion/completions/ovslab
    COMP_WORDS=($1 ''); COMP_CWORD=\${#COMP_WORDS[@]}; ((COMP_CWORD--))
    _ovslab_dynamic ovslab '' \"\${COMP_WORDS[COMP_CWORD-1]}\"; echo \"\${COMPREPLY[*]}\""
}
[ "$(completes 'ovslab down')" = seed ] || fail "bash does not complete the running lab: $(completes 'ovslab down')"
grep -qw instance4 <<<"$(completes 'ovslab exec')" || fail "bash does not complete the lab's targets: $(completes 'ovslab exec')"
for f in /usr/share/man/man1/ovslab.1.gz /usr/share/man/man5/ovslab-topology.5.gz /usr/share/man/man8/ovslabd.8.gz \
  /usr/share/zsh/vendor-completions/_ovslab /usr/share/fish/vendor_completions.d/ovslab.fish \
  /usr/share/ovslab/topology.schema.json /etc/default/ovslabd; do
  inside test -s "$f" || fail "the package did not install $f"
done
host_ovs_untouched "after the install"

say "ovslab check inside"
inside ovslab check || fail "ovslab check failed in the container"

say "the unit's hardening, in force"
verify=$(inside systemd-analyze verify /usr/lib/systemd/system/ovslabd.service 2>&1) ||
  fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify is not clean: $verify"
exposure=$(inside systemd-analyze security --no-pager ovslabd 2>&1 | grep 'Overall exposure level')
say "${exposure#→ }"
# What the unit sets, as systemd sees it.
show=$(inside systemctl show -p LimitNOFILE -p TasksMax -p UMask -p NoNewPrivileges \
  -p SystemCallErrorNumber -p RestrictNamespaces -p MemoryDenyWriteExecute ovslabd)
for want in LimitNOFILE=65536 TasksMax=4096 UMask=0077 NoNewPrivileges=yes \
  SystemCallErrorNumber=1 RestrictNamespaces=net MemoryDenyWriteExecute=yes; do
  grep -qx "$want" <<<"$show" || fail "systemctl show ovslabd: no $want in: $(tr '\n' ' ' <<<"$show")"
done
# The daemon and the OVS processes it started (inherited): the capability
# bounding set, a seccomp filter, no new privileges, the descriptor limit.
caps="cap_chown,cap_kill,cap_setgid,cap_setuid,cap_net_bind_service,cap_net_broadcast,cap_net_admin,cap_net_raw,cap_sys_admin"
main=$(inside systemctl show -p MainPID --value ovslabd)
vswitchd=$(inside cat /run/ovslab/seed/compute1/ovs-vswitchd.pid)
dbserver=$(inside cat /run/ovslab/seed/compute1/ovsdb-server.pid)
for pid in "$main" "$vswitchd" "$dbserver"; do
  st=$(inside cat "/proc/$pid/status") || fail "no process $pid"
  what="$(awk '/^Name:/ { print $2 }' <<<"$st") (pid $pid)"
  bnd=$(inside capsh --decode="$(awk '/^CapBnd:/ { print $2 }' <<<"$st")")
  [ "${bnd#*=}" = "$caps" ] || fail "$what: capability bounding set ${bnd#*=}, not $caps"
  grep -qx $'Seccomp:\t2' <<<"$st" || fail "$what: no seccomp filter: $(grep ^Seccomp <<<"$st")"
  grep -qx $'NoNewPrivs:\t1' <<<"$st" || fail "$what: new privileges not blocked"
  # LimitNOFILE=65536, as far as the container lets it (its own hard
  # limit caps it: 20000 on this machine kind); soft raised to hard.
  read -r soft hard < <(inside awk '/^Max open files/ { print $4, $5 }' "/proc/$pid/limits")
  [ "$soft" = "$hard" ] && [ "$soft" -ge 16384 ] ||
    fail "$what: $(inside grep 'open files' "/proc/$pid/limits")"
done
# The host's mount namespace: the labs' bind mounts under /run/netns must
# be seen outside the service (an option that brings a mount namespace of
# its own would hide them).
[ "$(inside readlink "/proc/$main/ns/mnt")" = "$(inside readlink /proc/1/ns/mnt)" ] ||
  fail "ovslabd runs in a mount namespace of its own"
inside ip netns exec seed.compute1 true || fail "the lab's namespaces cannot be entered from outside the service"
# (This container gives the unit no pids controller, so systemd cannot
# count its tasks: the named systemd hierarchy lists them.)
tasks=$(inside cat /sys/fs/cgroup/systemd/system.slice/ovslabd.service/tasks 2>/dev/null | wc -l)
say "ovslabd: $(inside ls "/proc/$main/fd" | wc -l) descriptors; the unit: $tasks tasks"
# The socket: 0660, group ovslab; members may use it, others may not.
sock=$(inside stat -c '%a %U %G' /run/ovslab/ovslabd.sock)
[ "$sock" = "660 root ovslab" ] || fail "the socket is $sock, not 660 root ovslab"
inside setpriv --reuid=member --regid=member --init-groups /usr/bin/ovslab status >/dev/null ||
  fail "a member of ovslab cannot use the API"
if inside setpriv --reuid=outsider --regid=outsider --init-groups /usr/bin/ovslab status >/dev/null 2>&1; then
  fail "someone outside ovslab could use the API"
fi
# UMask=0077: what the daemon creates is root's alone.
rundir=$(inside stat -c '%a' /run/ovslab/seed)
[ "$rundir" = 700 ] || fail "/run/ovslab/seed is $rundir, not 700"
# Nothing the lab did was refused: no OVS log tells of a denied call (OVS
# asks for netlink notices from every namespace, NETLINK_LISTEN_ALL_NSID,
# as the daemon does: the unit gives both CAP_NET_BROADCAST).
denied=$(inside sh -c 'cat /run/ovslab/seed/*/*.log' | grep -i -E 'operation not permitted|permission denied' || true)
[ -z "$denied" ] || fail "Open vSwitch logged refused calls: $denied"

say "under the unit: a TCP trace (a listener on port 22), and a killed ovs-vswitchd restarted by the audit"
inside ovslab trace instance1 instance3 --tcp 22 >/dev/null || fail "the TCP trace was not answered"
inside kill "$vswitchd"
for _ in $(seq 100); do
  again=$(inside cat /run/ovslab/seed/compute1/ovs-vswitchd.pid 2>/dev/null || true)
  [ -n "$again" ] && [ "$again" != "$vswitchd" ] && inside test -d "/proc/$again" && break
  sleep 0.1
done
[ -n "$again" ] && [ "$again" != "$vswitchd" ] || fail "the audit did not restart the killed ovs-vswitchd"
for _ in $(seq 100); do
  inside ovslab status seed 2>/dev/null | grep -q ': healthy' && break
  sleep 0.1
done
# A switch just restarted has learned no MAC yet and floods the first
# frames (same-node-stays-on-br-int then sees them on the wire): one retry.
inside ovslab check >/dev/null || inside ovslab check >/dev/null ||
  fail "ovslab check failed after the restart of ovs-vswitchd"

say "under the unit: DHCP (dnsmasq dropping to nobody, udhcpc, ovslabd's hook)"
sed 's/^lab: seed$/lab: dhcp/; /^    dhcp: false$/d' lab-topologies/seed.yaml >"$scratch/root/dhcp.yaml"
out=$(inside ovslab up /root/dhcp.yaml 2>&1) || fail "the DHCP lab did not come up: $out"
grep -q "holds no DHCP lease" <<<"$out" && fail "an instance got no lease under the unit: $out"
# Its three nodes took the unit's spare nodes (OVSLABD_SPARE_NODES=3),
# ready since the start: each left a link to the node it became.
taken=$(inside find /run/ovslab/.spares -maxdepth 1 -type l -lname '/run/ovslab/dhcp/*' | wc -l)
[ "$taken" = 3 ] || fail "the DHCP lab took $taken spare nodes, not 3: $(inside ls -l /run/ovslab/.spares)"
inside ip -n dhcp.instance1 -4 addr show eth0 | grep -q 'inet 192.168.1.11/24' ||
  fail "instance1 has not its reservation: $(inside ip -n dhcp.instance1 -4 addr show eth0)"
users=$(inside ps -o user= -C dnsmasq | sort -u | tr '\n' ' ')
[ "$users" = "nobody " ] || fail "dnsmasq runs as: $users"
# Audits leave it alone: the daemon cannot see the namespace of a process
# of another user under the unit (no CAP_SYS_PTRACE), and once restarted
# dnsmasq on every audit for it.
servers=$(inside ps -o pid= -C dnsmasq | tr -d ' ' | sort -n | tr '\n' ' ')
sleep 2
[ "$(inside ps -o pid= -C dnsmasq | tr -d ' ' | sort -n | tr '\n' ' ')" = "$servers" ] ||
  fail "the audits restarted dnsmasq: [$servers] -> [$(inside ps -o pid= -C dnsmasq | tr -d ' ' | sort -n | tr '\n' ' ')]"
inside ovslab check dhcp >/dev/null || fail "ovslab check failed in the DHCP lab"
inside ovslab down dhcp >/dev/null || fail "the DHCP lab did not go down"
left=$(inside ps -o comm= -C dnsmasq,udhcpc || true)
[ -z "$left" ] || fail "DHCP processes left after down: $left"

say "under the unit: an HA router (keepalived in each copy), its master's node failed and recovered"
cp lab-topologies/ha-vrrp.yaml "$scratch/root/ha.yaml"
out=$(inside ovslab up /root/ha.yaml 2>&1) || fail "the HA lab did not come up: $out"
grep -q "active copies" <<<"$out" && fail "no single master under the unit: $out"
ha_master() { inside ovslab status ha-vrrp | awk '$1 == "router1" && $3 == "active" { print $2 }'; }
master=$(ha_master)
[ "$(wc -w <<<"$master")" = 1 ] || fail "not one active copy: $(inside ovslab status ha-vrrp)"
inside ovslab check ha-vrrp >/dev/null || fail "ovslab check failed in the HA lab"
inside ovslab node fail --lab ha-vrrp "$master" >/dev/null || fail "node fail $master failed"
for _ in $(seq 120); do
  now=$(ha_master)
  [ -n "$now" ] && [ "$now" != "$master" ] && break
  sleep 0.1
done
[ -n "$now" ] && [ "$now" != "$master" ] || fail "the router did not fail over from $master"
inside ovslab check ha-vrrp >/dev/null || fail "ovslab check failed after the failover"
inside ovslab node recover --lab ha-vrrp "$master" >/dev/null || fail "node recover failed"
inside ovslab down ha-vrrp >/dev/null || fail "the HA lab did not go down"
left=$(inside ps -o comm= -C keepalived || true)
[ -z "$left" ] || fail "keepalived left after down: $left"

say "editing the lab file and reloading"
sed -i 's/^# What must hold/  - name: instance5\n    node: compute2\n    network: net1\n    address: 192.168.1.14\n    security_groups: [default]\n\n# What must hold/' \
  "$scratch/etc/ovslab/labs/seed.yaml"
inside systemctl reload ovslabd
wait_netns present '^seed\.instance5' || fail "the reload did not add instance5"
inside ip netns exec seed.instance1 ping -c 1 -W 2 192.168.1.14 >/dev/null || fail "instance5 unreachable"

say "a second lab file, then removing it: reload brings it up, then down"
sed 's/^lab: seed$/lab: other/' "$scratch/etc/ovslab/labs/seed.yaml" >"$scratch/etc/ovslab/labs/other.yaml"
inside systemctl reload ovslabd
wait_netns present '^other\.instance1' || fail "the reload did not bring up the lab of other.yaml"
rm "$scratch/etc/ovslab/labs/other.yaml"
inside systemctl reload ovslabd
wait_netns absent '^other\.' || fail "lab other still up after its file was removed"
has_netns '^seed\.instance5' || fail "removing other.yaml touched the seed lab"

say "stopping"
# The labs' Open vSwitch processes (not the host's own: their command
# lines name the lab's run directory; nor the spare nodes': they run in
# a spare's directory, which a node that took one runs in under its own
# name, as its working directory shows).
ovs_pids() {
  for pid in $(inside ps -e -o pid=,comm=,args= |
    awk '($2 == "ovs-vswitchd" || $2 == "ovsdb-server") && /\/run\/ovslab\// { print $1 }'); do
    case $(inside readlink "/proc/$pid/cwd") in /run/ovslab/.spares/*) ;; *) echo "$pid" ;; esac
  done | sort -n | tr '\n' ' '
}
# The spare nodes' processes: those whose working directory is still a
# spare's (a taken spare's has the node's path: its directory was moved).
spare_pids() {
  for pid in $(inside ps -e -o pid=,comm= | awk '$2 == "ovs-vswitchd" || $2 == "ovsdb-server" { print $1 }'); do
    case $(inside readlink "/proc/$pid/cwd") in /run/ovslab/.spares/*) echo "$pid" ;; esac
  done | sort -n | tr '\n' ' '
}
# Every stop removes the spares, whatever it does with the labs.
no_spares_left() {
  if has_netns '^ovslab-spare-'; then fail "spare namespaces left after stop: $(inside ip netns list)"; fi
  [ -z "$(spare_pids)" ] || fail "spare nodes' processes left after stop: $(spare_pids)"
  [ -z "$(inside find /run/ovslab/.spares -mindepth 1 -maxdepth 1 -type d 2>/dev/null)" ] ||
    fail "spare directories left after stop: $(inside ls -l /run/ovslab/.spares)"
}
inside systemctl stop ovslabd
if has_netns '^seed\.'; then fail "namespaces left after stop: $(inside ip netns list)"; fi
[ -z "$(ovs_pids)" ] || fail "OVS processes left after stop: $(ovs_pids)"
no_spares_left

say "keep: a stop with OVSLABD_ON_EXIT=keep leaves the lab running, the next start adopts it"
cp "$scratch/etc/default/ovslabd" "$scratch/root/default.packaged"
echo OVSLABD_ON_EXIT=keep >>"$scratch/etc/default/ovslabd"
inside systemctl start ovslabd
before=$(ovs_pids)
[ -n "$before" ] || fail "no Open vSwitch process after the start"
inside systemctl stop ovslabd
has_netns '^seed\.instance1' || fail "--on-exit keep: the lab is gone after the stop"
no_spares_left
after=$(ovs_pids)
[ "$after" = "$before" ] || fail "--on-exit keep: Open vSwitch processes changed across the stop: [$before] -> [$after]"
inside ip netns exec seed.instance1 ping -c 1 -W 2 192.168.1.11 >/dev/null || fail "--on-exit keep: no traffic while the daemon is stopped"
cp "$scratch/root/default.packaged" "$scratch/etc/default/ovslabd"
inside systemctl start ovslabd
[ "$(ovs_pids)" = "$before" ] || fail "the adopting start replaced Open vSwitch processes: [$before] -> [$(ovs_pids)]"
status=$(inside systemctl show -p StatusText --value ovslabd)
case $status in "1 lab, 5 instances, all healthy") ;; *) fail "after adopting, STATUS= says: $status" ;; esac
inside systemctl stop ovslabd
if has_netns '^seed\.'; then fail "namespaces left after stop: $(inside ip netns list)"; fi
[ -z "$(ovs_pids)" ] || fail "OVS processes left after stop: $(ovs_pids)"
no_spares_left

say "a lab left by ovslabd run by hand (every capability of the container) is adopted by the service"
hand=$(inside sh -c '/usr/sbin/ovslabd --on-exit keep >/var/log/ovslabd-by-hand.log 2>&1 & echo $!')
for _ in $(seq 300); do
  inside ovslab status seed 2>/dev/null | grep -q ': healthy' && break
  sleep 0.1
done
inside ovslab status seed | grep -q ': healthy' || fail "ovslabd run by hand did not bring the seed lab up"
inside kill -TERM "$hand"
for _ in $(seq 300); do inside test -d "/proc/$hand" || break; sleep 0.1; done
inside test -d "/proc/$hand" && fail "ovslabd run by hand did not stop"
before=$(ovs_pids)
[ -n "$before" ] || fail "no Open vSwitch process left by ovslabd run by hand"
inside systemctl start ovslabd
[ "$(ovs_pids)" = "$before" ] ||
  fail "the service did not adopt the switches of ovslabd run by hand: [$before] -> [$(ovs_pids)]"
status=$(inside systemctl show -p StatusText --value ovslabd)
case $status in "1 lab, 5 instances, all healthy") ;; *) fail "after adopting from ovslabd run by hand, STATUS= says: $status" ;; esac
inside systemctl stop ovslabd
if has_netns '^seed\.'; then fail "namespaces left after stop: $(inside ip netns list)"; fi
[ -z "$(ovs_pids)" ] || fail "adopted OVS processes left after stop: $(ovs_pids)"
no_spares_left

say "the journal"
journal=$(inside journalctl -u ovslabd --no-pager)
# (grep -q on a here-string: in a pipeline it would leave echo writing to a
# closed pipe, which pipefail reports as a failure once the log is long.)
grep -q "listening on /run/ovslab/ovslabd.sock" <<<"$journal" || fail "no daemon log in the journal: $(tail -20 <<<"$journal")"
grep -q "stopping with --on-exit down: removing lab seed" <<<"$journal" || fail "no on-exit down in the journal"
# (OVS logs to the journal too. The daemon would log a refused routing
# notice socket here: "cannot subscribe to routing notices".)
denied=$(grep -i -E 'operation not permitted|permission denied|cannot subscribe' <<<"$journal" || true)
[ -z "$denied" ] || fail "the unit's processes logged refused calls: $denied"
tail -3 <<<"$journal"

say "upgrade: apt install of a rebuilt package keeps the labs running"
inside systemctl start ovslabd
out=$(inside ovslab up /root/dhcp.yaml 2>&1) || fail "the DHCP lab did not come up: $out"
agent_pids() { { inside ps -o pid= -C dnsmasq,udhcpc || true; } | sort -n | tr -d ' ' | tr '\n' ' '; }
before=$(ovs_pids)
agents=$(agent_pids)
[ -n "$agents" ] || fail "no DHCP processes before the upgrade"
main=$(inside systemctl show -p MainPID --value ovslabd)
# Traffic across the upgrade: one ping every 0.2 s for 15 s.
inside sh -c 'ip netns exec seed.instance1 ping -n -i 0.2 -w 15 192.168.1.12 >/var/tmp/ping.txt 2>&1 &'
sleep 1
out=$(inside sh -c "cd /var/tmp && DEBIAN_FRONTEND=noninteractive apt-get install -y ./${upgrade##*/}" 2>&1) ||
  fail "the upgrade failed: $out"
version=$(inside dpkg-query -W -f='${Version}' ovslab)
say "upgraded to $version"
[ "$version" = "$(dpkg-deb -f "$upgrade" Version)" ] || fail "the upgrade installed $version"
inside systemctl is-active --quiet ovslabd || fail "ovslabd is not running after the upgrade"
[ "$(inside systemctl show -p MainPID --value ovslabd)" != "$main" ] || fail "the upgrade did not restart ovslabd"
[ "$(ovs_pids)" = "$before" ] || fail "the upgrade replaced Open vSwitch processes: [$before] -> [$(ovs_pids)]"
[ "$(agent_pids)" = "$agents" ] || fail "the upgrade replaced DHCP processes: [$agents] -> [$(agent_pids)]"
inside test -e /run/ovslab/.on-exit-once && fail "the upgrade left /run/ovslab/.on-exit-once"
status=$(inside systemctl show -p StatusText --value ovslabd)
case $status in "2 labs, 9 instances, all healthy") ;; *) fail "after the upgrade, STATUS= says: $status" ;; esac
for _ in $(seq 200); do inside pgrep -x ping >/dev/null || break; sleep 0.1; done
ping=$(inside cat /var/tmp/ping.txt)
sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' <<<"$ping")
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$ping")
say "ping across the upgrade: $received of $sent answered"
[ -n "$sent" ] && [ "$sent" -ge 50 ] && [ "$received" -ge $((sent - 1)) ] || fail "traffic was lost across the upgrade: $ping"
inside ovslab check dhcp >/dev/null || fail "ovslab check failed in the DHCP lab after the upgrade"
journal=$(inside journalctl -u ovslabd --no-pager)
grep -q "labs stay up: .on-exit-once asks keep" <<<"$journal" || fail "the upgrade's stop did not keep the labs"
host_ovs_untouched "after the upgrade"

say "remove: apt remove stops the service, even one told to keep its labs, and leaves nothing running"
echo OVSLABD_ON_EXIT=keep >>"$scratch/etc/default/ovslabd"
inside systemctl restart ovslabd
main=$(inside systemctl show -p MainPID --value ovslabd)
inside cat "/proc/$main/cmdline" | tr '\0' ' ' | grep -q -- '--on-exit keep ' ||
  fail "ovslabd was not started with --on-exit keep: $(inside cat "/proc/$main/cmdline" | tr '\0' ' ')"
has_netns '^seed\.compute1' || fail "the seed lab is not up before the removal"
out=$(inside sh -c "DEBIAN_FRONTEND=noninteractive apt-get remove -y ovslab" 2>&1) || fail "apt remove failed: $out"
grep -q "removing every lab: .on-exit-once asks down" <<<"$(inside journalctl -u ovslabd --no-pager)" ||
  fail "the removal's stop did not take the labs down"
grep -q "still runs" <<<"$out" && fail "apt remove left a lab: $out"
inside systemctl is-active --quiet ovslabd && fail "ovslabd still runs after apt remove"
[ -z "$(inside ps -o pid= -C ovslabd || true)" ] || fail "an ovslabd process is left"
[ -z "$(ovs_pids)" ] || fail "the labs' Open vSwitch processes are left: $(ovs_pids)"
[ -z "$(agent_pids)" ] || fail "DHCP processes are left: $(agent_pids)"
left=$(inside ip netns list)
[ -z "$left" ] || fail "namespaces are left: $left"
for f in /usr/bin/ovslab /usr/sbin/ovslabd /usr/lib/systemd/system/ovslabd.service /run/ovslab/ovslabd.sock \
  /usr/share/man/man1/ovslab.1.gz /usr/share/bash-completion/completions/ovslab; do
  inside test -e "$f" && fail "$f is left after apt remove"
done
# Debian keeps the configuration until a purge.
inside test -e /etc/ovslab/labs/seed.yaml || fail "apt remove took the edited lab file"
inside test -e /etc/default/ovslabd || fail "apt remove took /etc/default/ovslabd"
host_ovs_untouched "after the removal"

say "purge: the configuration and the run state go"
out=$(inside sh -c "DEBIAN_FRONTEND=noninteractive apt-get purge -y ovslab" 2>&1) || fail "apt purge failed: $out"
for f in /etc/ovslab /etc/default/ovslabd /run/ovslab; do
  inside test -e "$f" && fail "$f is left after apt purge"
done
inside dpkg-query -W ovslab >/dev/null 2>&1 && fail "dpkg still knows ovslab after the purge"
inside systemctl cat ovslabd >/dev/null 2>&1 && fail "systemd still has a unit ovslabd after the purge"
host_ovs_untouched "after the purge"

say "PASS"
