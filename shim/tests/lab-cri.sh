#!/bin/bash
# shim/tests/lab-cri.sh: a pod through containerd's CRI plugin (Debian's containerd 1.6), driven
# by our own CRI client rvm-cri (tests/cri-client), with the runtime handler CRI_HANDLER:
#
#   rvm (default), in the lab:
#     cargo build -p rvm-cri-client -p containerd-shim-rvm-v1 -p rvm-vmm && guest-kernel/build \
#         && agent/build-initramfs && tests/lab/run -- shim/tests/lab-cri.sh
#   runc, natively as root on any Linux host (checks the client, the CRI config, the images and
#   CNI without a VM):
#     cargo build -p rvm-cri-client && CRI_HANDLER=runc shim/tests/lab-cri.sh
#
# Starts containerd with its own root, state, config and socket under a temporary directory and
# the CRI plugin on: sandbox image docker.io/rvm/pause:1 (a busybox sh that sleeps, made by
# tools/busybox-image --cmd and imported into k8s.io before any pod starts, as is the busybox
# image), overlayfs, runtimes runc (the default) and rvm, CNI from Debian's
# containernetworking-plugins (/usr/lib/cni): a bridge cnirvm0 with host-local addresses in
# 10.99.0.0/24 (containerd adds the loopback network itself). Then:
#   - runp (handler CRI_HANDLER, a log directory, linux.resources of 256 MiB and 2 CPUs: quota
#     200000 per 100000 µs): the pod is SANDBOX_READY with an IP in 10.99.0.0/24, and containerd
#     put the resources on the sandbox's spec as io.kubernetes.cri.sandbox-* annotations;
#   - two busybox containers: c1 serves a page with httpd on 127.0.0.1:8080, c2 sleeps; both
#     RUNNING; exec prints output and passes exit codes; c2 fetches c1's page over 127.0.0.1 (the
#     pod's containers share one network namespace); c1's eth0 has the pod's IP; the host pings
#     the pod's IP and c2 pings the bridge; c1's stdout is in LOGDIR/c1.log;
#   - volumes as kubelet passes them: a configMap and a service-account token directory
#     (read-only, with kubelet's ..data symlinks) in c1 and c2, the configMap then updated the
#     way kubelet's atomic writer does and the new value seen in both, an emptyDir that both write and
#     read each other's files in, /dev/shm and the IPC namespace shared by the pod's containers, a Memory emptyDir (host tmpfs of 8 MiB) that c1 sees as a tmpfs
#     of 8 MiB; a symlink in the token volume to a host file outside it stays a symlink
#     whose target the pod cannot read; a subPath of the emptyDir (kubelet's volume-subpaths bind) that a third
#     container writes in and reads c1's files from, seeing only that directory; rvm only: a
#     subPath whose directory a container replaced by a symlink to / is refused at start, and a
#     writable host directory is refused (at StartContainer, when the shim sees the task),
#     naming the mount;
#   - rvm only: c1 (no seccompProfile) runs under the runtime's default seccomp filter, and so
#     does c2, whose annotation org.rvm.seccomp=unconfined containerd passes into its spec
#     (container_annotations) and the shim removes, logging it;
#   - rvm only: one rvm-vmm and one shim process serve the pod (both containers in its VM), and
#     the VM is the pod's size: c1's nproc is 2 (fewer if the host has fewer CPUs: the shim caps
#     vCPUs at those), and the guest's MemTotal is above the pod's 256 MiB (the kernel's
#     reservations fit in the runtime's VM_OVERHEAD_MIB; a VM of the default size could not pass)
#     and at most the VM's 256 MiB + VM_OVERHEAD_MIB; skipped with runc, whose pods see the host;
#   - c2 has its own pid namespace (kubelet's default: namespace_options.pid CONTAINER): c1's
#     httpd is not in its ps;
#   - kubelet's termination message: a container with an empty host file bound writable on
#     /dev/termination-log (kubelet's layout pods/<uid>/containers/<name>/<id>) writes a message
#     and exits 3: CONTAINER_EXITED, exit code 3, and the host file holds the message;
#   - stop c1: CONTAINER_EXITED; stopp, rmp; afterwards (rvm) no rvm-vmm or shim process is left,
#     and the pod's network namespace is gone;
#   - a second pod with `runp --share-pid` (shareProcessNamespace: pid POD): its containers p1
#     and p2 see each other's processes and the pause process's in ps, PID 1 is the pause
#     process; stop p1 (not PID 1, its TERM trap runs): exit code 0, and the sleep it left
#     behind dies with it while p2 runs on; stopp, rmp, no rvm process left.
# Binaries: CRI_CLIENT (else target/debug/rvm-cri, else target/release/rvm-cri); for rvm, SHIM_BIN
# (else target/debug, else target/release) with rvm-vmm beside it and the guest artifacts in
# RVM_GUEST_DIR (else target/rvm-guest). die/say, the binary and host checks, fail/ok and check
# come from tests/e2e/lib.sh. containerd's log ends up in target/tmp/lab-cri.log.
# Exit status 0 when every check passed.
set -uo pipefail
e2e_name=lab-cri
# shellcheck source-path=SCRIPTDIR source=../../tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tests/e2e/lib.sh" || exit 1
# shellcheck source-path=SCRIPTDIR source=../../tests/security/jail-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tests/security/jail-lib.sh" || exit 1
handler=${CRI_HANDLER:-rvm}
image=docker.io/library/busybox:latest
pause_image=docker.io/rvm/pause:1
bridge=cnirvm0
subnet=10.99.0.0/24
cni_bin=/usr/lib/cni
# The pod's resources, as kubelet sends them for a pod whose containers' limits add up to
# 256 MiB and 2 CPUs.
pod_memory=$((256 << 20))
pod_cpu_quota=200000
pod_cpu_period=100000

[ "$(id -u)" -eq 0 ] || die "run as root (containerd, mounts, network namespaces)"
case $handler in
    rvm)
        e2e_find_binary containerd-shim-rvm-v1 containerd-shim-rvm-v1 "${SHIM_BIN:-}"
        shim=$e2e_bin
        e2e_require_lab
        e2e_require_tools mkfs.erofs mkfs.ext4
        ;;
    runc) e2e_require_tools runc containerd-shim-runc-v2 ;;
    *) die "CRI_HANDLER must be rvm or runc, not '$handler'" ;;
esac
e2e_require_tools containerd ctr python3 ip
for plugin in bridge host-local loopback; do
    [ -x "$cni_bin/$plugin" ] || die "$cni_bin/$plugin is missing (apt-get install containernetworking-plugins)"
done
cri_client=${CRI_CLIENT:-}
if [ -z "$cri_client" ]; then
    for candidate in "$target/debug/rvm-cri" "$target/release/rvm-cri"; do
        if [ -x "$candidate" ]; then cri_client=$candidate; break; fi
    done
fi
[ -x "${cri_client:-/nonexistent}" ] || die "no rvm-cri binary: cargo build -p rvm-cri-client first"
[ -x "$repo/tools/busybox-image" ] || die "tools/busybox-image is missing"
# The overlayfs snapshotter needs the overlay file system; containerd pins pod network
# namespaces under /var/run/netns.
grep -qw overlay /proc/filesystems || modprobe overlay || die "no overlay file system"
mkdir -p /var/run/netns || die "cannot create /var/run/netns"

# Sockets cannot be bound on the lab's 9p-shared repository: everything lives in /tmp.
tmp=$(mktemp -d /tmp/lab-cri.XXXXXX) || die "cannot create a temporary directory"
socket=$tmp/containerd.sock
logdir=$tmp/pod-logs
mkdir -p "$tmp/bin" "$tmp/cni" "$logdir"
if [ "$handler" = rvm ]; then
    export RVM_ROOT=$tmp/rvm
    mkdir -p "$RVM_ROOT"
    # Copies on the lab's tmpfs (see lab-containerd.sh: a debug binary read over 9p can be too
    # slow for containerd's 5 s `shim delete`); rvm-vmm beside the shim, where the shim looks.
    cp "$shim" "$tmp/bin/containerd-shim-rvm-v1"
    cp "$(dirname "$shim")/rvm-vmm" "$tmp/bin/rvm-vmm"
fi
cri_plugin='plugins."io.containerd.grpc.v1.cri"'
cat >"$tmp/config.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
[grpc]
  address = "$socket"
[ttrpc]
  address = "$socket.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$tmp/opt"
[$cri_plugin]
  sandbox_image = "$pause_image"
  # A minimal host: no AppArmor, and possibly an oom_score_adj we may not lower.
  disable_apparmor = true
  restrict_oom_score_adj = true
  systemd_cgroup = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [$cri_plugin.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [$cri_plugin.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [$cri_plugin.containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state beside ours, not in the host's /run/containerd/runc.
        Root = "$tmp/runc"
    [$cri_plugin.containerd.runtimes.rvm]
      runtime_type = "io.containerd.rvm.v1"
      # As a careless operator might: containers' rvm annotations reach the spec (c2's).
      container_annotations = ["org.rvm.*"]
  [$cri_plugin.cni]
    bin_dir = "$cni_bin"
    conf_dir = "$tmp/cni"
    max_conf_num = 1
TOML
cat >"$tmp/cni/10-lab-cri.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "lab-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$subnet" }]],
        "dataDir": "$tmp/cni-ipam"
      }
    }
  ]
}
JSON

containerd_pid=
pod=
netns=
bridge_existed=no
ip link show "$bridge" >/dev/null 2>&1 && bridge_existed=yes
cleanup() {
    # A failed check may leave the pod: stop and remove it through CRI, so that its containers
    # (runc's are not children of anything we kill) and its network namespace go properly.
    if [ -n "$containerd_pid" ] && [ -n "$pod" ]; then
        timeout 60 "$cri_client" --socket "$socket" --timeout 50 stopp "$pod" >/dev/null 2>&1
        timeout 60 "$cri_client" --socket "$socket" --timeout 50 rmp "$pod" >/dev/null 2>&1
    fi
    if [ -n "$containerd_pid" ]; then
        kill "$containerd_pid" 2>/dev/null
        wait "$containerd_pid" 2>/dev/null
    fi
    # Whatever is still running: this test's shims and VMMs only (their command lines name $tmp).
    pkill -KILL -f "$tmp/" 2>/dev/null
    mkdir -p "$target/tmp"
    cp "$tmp/containerd.log" "$target/tmp/lab-cri.log" 2>/dev/null
    # Mounts under $tmp (snapshots, rootfs, sandbox /dev/shm), deepest first.
    awk -v tmp="$tmp/" 'index($2, tmp) == 1 { print $2 }' /proc/self/mounts | sort -r \
        | while read -r mount; do umount -l "$mount" 2>/dev/null; done
    if [ -n "$netns" ] && [ -e "$netns" ]; then
        umount "$netns" 2>/dev/null
        rm -f "$netns"
    fi
    [ "$bridge_existed" = yes ] || ip link del "$bridge" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# containerd_log_tail: the last lines of containerd's log without debug lines.
containerd_log_tail() {
    echo "--- containerd log (tail) ---"
    grep -v 'level=debug' "$tmp/containerd.log" | tail -40
}

# need NAME CMD...: check, and end the test at once if it failed: what follows depends on it,
# and every later call would wait for its own timeout.
need() {
    check "$@" && return 0
    containerd_log_tail
    echo "lab-cri: stopped after a failed step, $failures failure(s)"
    exit 1
}

# cri ARGS...: runs rvm-cri against this containerd; output in $out/$err, status in $status.
# A VM's boot inside the lab takes seconds to a minute on a loaded host: 180 s is far above.
cri() {
    timeout 180 "$cri_client" --socket "$socket" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

# c ARGS...: ctr in containerd's k8s.io namespace (CRI's); output and status as cri's.
c() {
    timeout 300 ctr --address "$socket" -n k8s.io "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

# field PATH: the value at PATH (keys joined by dots, list indexes as numbers) in the JSON in
# $out; strings bare, empty when absent.
field() {
    python3 -c '
import json, sys
value = json.loads(sys.argv[1])
for key in sys.argv[2].split("."):
    if isinstance(value, list) and key.isdigit() and int(key) < len(value):
        value = value[int(key)]
    elif isinstance(value, dict):
        value = value.get(key)
    else:
        value = None
print("" if value is None else value if isinstance(value, str) else json.dumps(value))
' "$out" "$1" 2>/dev/null
}

# spec_annotation KEY: the annotation KEY of the sandbox's OCI spec in $out (inspectp's
# spec_annotations; keys have dots, so not through field).
spec_annotation() {
    python3 -c 'import json, sys
print((json.loads(sys.argv[1]).get("spec_annotations") or {}).get(sys.argv[2], ""))' "$out" "$1" 2>/dev/null
}

# mem_total_kib: MemTotal (KiB) of /proc/meminfo as c1 sees it, empty if exec failed.
mem_total_kib() {
    cri exec "$c1" -- cat /proc/meminfo
    [ "$status" -eq 0 ] && awk '$1 == "MemTotal:" { print $2 }' "$tmp/out"
}

# in_subnet IP: whether IP is an IPv4 address inside $subnet.
in_subnet() {
    python3 -c 'import ipaddress, sys
sys.exit(ipaddress.ip_address(sys.argv[1]) not in ipaddress.ip_network(sys.argv[2]))' "$1" "$subnet" 2>/dev/null
}

# within SECONDS CMD...: runs CMD every 0.2 s until it succeeds or SECONDS have passed.
within() {
    local deadline=$((SECONDS + $1))
    shift
    while :; do
        "$@" && return 0
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# container_state CID STATE: whether `inspect CID` shows STATE.
container_state() {
    cri inspect "$1"
    [ "$status" -eq 0 ] && [ "$(field state)" = "$2" ]
}

# fetched: whether c2 gets c1's page from 127.0.0.1:8080.
fetched() {
    cri exec "$c2" -- wget -qO- http://127.0.0.1:8080/
    [ "$status" -eq 0 ] && [ "$out" = hello-from-c1 ]
}

# reads CID FILE WANT: whether `cat FILE` in CID prints WANT.
reads() {
    cri exec "$1" -- cat "$2"
    [ "$status" -eq 0 ] && [ "$out" = "$3" ]
}

# ping_ok IP: whether the host gets an answer from IP (busybox's ping where iputils' is missing).
ping_ok() {
    if command -v ping >/dev/null; then
        ping -c 3 -W 5 "$1" >/dev/null 2>&1
    else
        busybox ping -c 3 -W 5 "$1" >/dev/null 2>&1
    fi
}

# count PATTERN: how many processes' command lines match PATTERN.
count() { pgrep -fc "$1" || true; }

# --- containerd --------------------------------------------------------------------------------
e2e_start_containerd "$tmp/bin" "$tmp/config.toml" "$socket" "$tmp/containerd.log"
say "containerd $(containerd --version | awk '{print $3}') up on $socket, handler $handler"

"$repo/tools/busybox-image" "$tmp/busybox-oci.tar" "$image" >/dev/null || die "tools/busybox-image failed"
"$repo/tools/busybox-image" \
    --cmd '["sh","-c","trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]' \
    "$tmp/pause-oci.tar" "$pause_image" >/dev/null || die "tools/busybox-image --cmd (pause) failed"
for archive in busybox-oci.tar pause-oci.tar; do
    c image import "$tmp/$archive"
    [ "$status" -eq 0 ] || die "ctr -n k8s.io image import $archive failed ($status): $err"
done
c image ls -q
check "the pause image is in k8s.io" grep -qx "$pause_image" "$tmp/out"
check "the busybox image is in k8s.io" grep -qx "$image" "$tmp/out"

# --- the pod -------------------------------------------------------------------------------------
cri version
check "rvm-cri version answers" test "$status" -eq 0 -a -n "$out"
say "runtime: $out"

cri runp --name lab-cri-pod --handler "$handler" --hostname lab-cri-pod --log-dir "$logdir" \
    --memory-limit "$pod_memory" --cpu-quota "$pod_cpu_quota" --cpu-period "$pod_cpu_period"
pod=$out
need "runp (handler $handler, $((pod_memory >> 20)) MiB, quota $pod_cpu_quota/$pod_cpu_period) prints a pod id" \
    test "$status" -eq 0 -a -n "$pod"

cri inspectp "$pod"
pod_ip=$(field network.ip)
netns=$(field netns)
need "the pod is SANDBOX_READY" test "$(field state)" = SANDBOX_READY
check "the pod's runtime handler is $handler" test "$(field runtime_handler)" = "$handler"
if [ "$handler" = rvm ]; then
    # The pod's VM, started by the shim, is jailed as `rvm run`'s are (issue 21).
    pod_vmm=$(pgrep -f "rvm-vmm .*$pod" | head -n 1)
    need "the pod's rvm-vmm runs (pid ${pod_vmm:-none})" test -n "$pod_vmm"
    jail_check_vmm "$pod_vmm" "pod"
fi
check "the pod's IP ($pod_ip) is in $subnet" in_subnet "$pod_ip"
for pair in memory:$pod_memory cpu-quota:$pod_cpu_quota cpu-period:$pod_cpu_period; do
    key=io.kubernetes.cri.sandbox-${pair%%:*}
    check "the sandbox's spec has $key=${pair#*:} ($(spec_annotation "$key"))" \
        test "$(spec_annotation "$key")" = "${pair#*:}"
done

# The pod's volumes as kubelet lays them out and passes them (host paths in CreateContainer):
# a configMap and the service-account token (read-only, kubelet's ..data symlink layout), an
# emptyDir on disk that both containers mount, and one of medium Memory (a tmpfs of 8 MiB).
volumes=$tmp/kubelet/pods/$(printf '%s' lab-cri-pod | md5sum | cut -c1-8)/volumes
atomic_volume() { # DIR FILE=CONTENT...: kubelet's atomic-writer layout of the files
    local dir=$1 data=..2026_12_02_10_00_00.1 pair
    shift
    mkdir -p "$dir/$data"
    for pair in "$@"; do
        printf '%s' "${pair#*=}" >"$dir/$data/${pair%%=*}"
        ln -s "..data/${pair%%=*}" "$dir/${pair%%=*}"
    done
    ln -s "$data" "$dir/..data"
}
atomic_volume "$volumes/kubernetes.io~configmap/config" game.properties=lives=3
atomic_volume "$volumes/kubernetes.io~projected/kube-api-access-lab" \
    token=eyJhbGciOiJSUzI1NiJ9.lab-cri-token namespace=default ca.crt=lab-ca
# A symlink in a volume to a host file outside it: it travels as a link, never followed.
printf 'host-secret-%s' "$$" >"$tmp/host-secret"
ln -s "$tmp/host-secret" "$volumes/kubernetes.io~projected/kube-api-access-lab/leak"
mkdir -p "$volumes/kubernetes.io~empty-dir/cache" "$volumes/kubernetes.io~empty-dir/mem" \
    "$tmp/hostdata"
mount -t tmpfs -o size=8m tmpfs "$volumes/kubernetes.io~empty-dir/mem" \
    || die "cannot mount the memory emptyDir's tmpfs"
token_dir=/var/run/secrets/kubernetes.io/serviceaccount
pod_mounts=(--mount "$volumes/kubernetes.io~configmap/config:/etc/config:ro"
    --mount "$volumes/kubernetes.io~projected/kube-api-access-lab:$token_dir:ro"
    --mount "$volumes/kubernetes.io~empty-dir/cache:/cache")

cri create --pod "$pod" --name c1 --image "$image" "${pod_mounts[@]}" \
    --mount "$volumes/kubernetes.io~empty-dir/mem:/mem" -- sh -c \
    'mkdir -p /www && echo hello-from-c1 >/www/index.html && echo c1-ready
     trap "exit 0" TERM; httpd -f -p 127.0.0.1:8080 -h /www & wait $!'
c1=$out
need "create c1 (httpd on 127.0.0.1:8080)" test "$status" -eq 0 -a -n "$c1"
cri create --pod "$pod" --name c2 --image "$image" "${pod_mounts[@]}" \
    --annotation org.rvm.seccomp=unconfined -- sh -c \
    'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'
c2=$out
need "create c2 (sleeps)" test "$status" -eq 0 -a -n "$c2"
cri start "$c1"
need "start c1" test "$status" -eq 0
cri start "$c2"
need "start c2" test "$status" -eq 0
need "c1 is CONTAINER_RUNNING" within 30 container_state "$c1" CONTAINER_RUNNING
need "c2 is CONTAINER_RUNNING" within 30 container_state "$c2" CONTAINER_RUNNING

cri ps --pod "$pod"
check "ps --pod lists c1 and c2" test "$(field 0.pod_sandbox_id)" = "$pod" -a "$(field 1.pod_sandbox_id)" = "$pod" -a -z "$(field 2.id)"
cri pods
check "pods lists the pod" grep -q "\"id\": \"$pod\"" "$tmp/out"

cri exec "$c1" -- echo hello
check "exec c1 echo hello prints hello" test "$status" -eq 0 -a "$out" = hello
cri exec "$c1" -- sh -c 'echo to-stderr >&2; exit 3'
check "exec c1 sh -c 'exit 3' exits 3" test "$status" -eq 3
check "the exec's stderr reaches ours" test "$err" = to-stderr

check "c2 gets c1's page from 127.0.0.1:8080 (one network namespace)" within 30 fetched

# The volumes (see above).
cri exec "$c1" -- cat /etc/config/game.properties
check "c1 reads the configMap's key through its symlinks (got '$out')" test "$status" -eq 0 -a "$out" = lives=3
cri exec "$c1" -- readlink /etc/config/..data
check "the configMap keeps kubelet's ..data link (got '$out')" test "$out" = ..2026_12_02_10_00_00.1
cri exec "$c1" -- sh -c 'echo x >/etc/config/new'
check "the configMap is read-only in c1" test "$status" -ne 0
# kubelet updates the configMap in place with its atomic writer: the next generation beside
# the current one, ..data renamed onto it, the old one removed. Both containers see it.
config_dir=$volumes/kubernetes.io~configmap/config
mkdir "$config_dir/..2026_12_02_10_01_00.2"
printf '%s' lives=4 >"$config_dir/..2026_12_02_10_01_00.2/game.properties"
ln -s ..2026_12_02_10_01_00.2 "$config_dir/..data_tmp"
mv -T "$config_dir/..data_tmp" "$config_dir/..data"
rm -rf "$config_dir/..2026_12_02_10_00_00.1"
check "c1 sees kubelet's update of the configMap (lives=4) within 30 s" \
    within 30 reads "$c1" /etc/config/game.properties lives=4
check "c2 sees it too" within 30 reads "$c2" /etc/config/game.properties lives=4
cri exec "$c2" -- ls -a /etc/config
check "the old generation is gone from c2's configMap (got '$(echo $out)')" \
    test "$(echo $out)" = ". .. ..2026_12_02_10_01_00.2 ..data game.properties"
cri exec "$c2" -- cat "$token_dir/token"
check "c2 reads the service-account token (got '$out')" test "$out" = eyJhbGciOiJSUzI1NiJ9.lab-cri-token
cri exec "$c2" -- cat "$token_dir/namespace"
check "c2 reads the service-account namespace" test "$out" = default
cri exec "$c2" -- readlink "$token_dir/leak"
check "a volume's symlink to a host file outside it stays a symlink (got '$out')" \
    test "$out" = "$tmp/host-secret"
cri exec "$c2" -- cat "$token_dir/leak"
check "the host file it points at is not in the pod (got '$out')" \
    eval '[[ $status -ne 0 && "$out" != *host-secret* ]]'
if [ "$handler" = rvm ]; then
    # No seccompProfile: the shim's default, Docker's profile (RVM_SECCOMP_DEFAULT). c2 carries
    # org.rvm.seccomp=unconfined (passed by containerd, see container_annotations): the shim
    # removes it and says so, and c2 is filtered all the same (issue 22).
    cri exec "$c1" -- awk '/^Seccomp:/ { print $2 }' /proc/self/status
    check "c1 (no seccompProfile) runs under the runtime's default filter (Seccomp: $out)" \
        test "$out" = 2
    check "the shim removed c2's annotation org.rvm.seccomp and logged it" \
        grep -q 'annotations reserved to rvm removed' "$tmp/containerd.log"
    cri exec "$c2" -- awk '/^Seccomp:/ { print $2 }' /proc/self/status
    check "c2's annotation org.rvm.seccomp=unconfined does not switch its filter off (Seccomp: $out)" \
        test "$out" = 2
fi
cri exec "$c1" -- sh -c 'echo written-by-c1 >/cache/from-c1'
check "c1 writes into the emptyDir" test "$status" -eq 0
cri exec "$c2" -- cat /cache/from-c1
check "c2 reads what c1 wrote in the shared emptyDir (got '$out')" test "$out" = written-by-c1
cri exec "$c2" -- sh -c 'echo written-by-c2 >/cache/from-c2'
cri exec "$c1" -- cat /cache/from-c2
check "c1 reads what c2 wrote in the shared emptyDir (got '$out')" test "$out" = written-by-c2
cri exec "$c1" -- readlink /proc/self/ns/ipc
ipc_c1=$out
cri exec "$c2" -- readlink /proc/self/ns/ipc
check "c1 and c2 share one IPC namespace, the pod's ($ipc_c1, $out)" test -n "$out" -a "$out" = "$ipc_c1"
cri exec "$c2" -- hostname
check "c2's hostname is the pod's (got '$out')" test "$out" = lab-cri-pod
# kubelet's default (namespace_options.pid CONTAINER): a pid namespace per container.
cri exec "$c2" -- ps -o args
check "c2 has its own pid namespace: c1's httpd is not in its ps" \
    test "$status" -eq 0 -a -n "$out" -a -n "${out##*httpd*}"
cri exec "$c1" -- sh -c 'echo shm-of-c1 >/dev/shm/from-c1'
cri exec "$c2" -- cat /dev/shm/from-c1
check "c2 reads what c1 wrote in /dev/shm (the pod's shm; got '$out')" test "$out" = shm-of-c1
# A hostile container of the pod makes nodes for the disks it sees (in rvm's VM the scratch disk
# holds c1's writable layer and the pod's emptyDirs) and reads them: containerd's device rules,
# enforced by the agent's device filter (runc's on the host), refuse every read (issue 22).
cri exec "$c2" -- sh -c 'n=0; for d in /sys/block/*/dev; do n=$((n + 1)); dev=$(cat "$d");
    mknod /dev/x$n b ${dev%:*} ${dev#*:} && head -c 512 /dev/x$n >/dev/null && echo "READ $d"; done
    echo "disks $n"'
check "c2 cannot read the disks it sees through nodes it makes (got '$(echo $out)')" \
    eval '[[ "$out" != *READ* && "$out" == *"disks "[1-9]* && "$err" == *"Operation not permitted"* ]]'
cri exec "$c1" -- sh -c 'grep " /mem " /proc/mounts; df -k /mem | tail -n 1'
mem_fs=$(awk 'NR == 1 { print $3 }' "$tmp/out")
mem_kib=$(awk 'NR == 2 { print $2 }' "$tmp/out")
check "the Memory emptyDir is a tmpfs in c1 (got '${mem_fs:-?}')" test "$mem_fs" = tmpfs
check "the Memory emptyDir holds 8 MiB (df: ${mem_kib:-?} KiB)" test "${mem_kib:-0}" -eq 8192
# A subPath of the emptyDir as kubelet makes one: the directory inside the emptyDir (made on
# the host, after c1 and c2 started: new to an rvm VM's copy), bound by the host at
# pods/<uid>/volume-subpaths/<volume>/<container>/<index>, which CreateContainer names.
cache_dir=$volumes/kubernetes.io~empty-dir/cache
subpaths=$(dirname "$volumes")/volume-subpaths/cache
mkdir -p "$cache_dir/sub/logs" "$subpaths/sp/0"
mount --bind "$cache_dir/sub/logs" "$subpaths/sp/0" || die "cannot bind the subPath"
cri create --pod "$pod" --name sp --image "$image" --mount "$subpaths/sp/0:/logs" -- sh -c \
    'echo written-by-sp >/logs/from-sp; trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'
sp=$out
check "create sp with the emptyDir's subPath sub/logs on /logs" test "$status" -eq 0 -a -n "$sp"
cri start "$sp"
check "start sp${err:+ ($err)}" test "$status" -eq 0
check "c1 reads what sp wrote on /logs in /cache/sub/logs" \
    within 30 reads "$c1" /cache/sub/logs/from-sp written-by-sp
cri exec "$c1" -- sh -c 'echo written-by-c1 >/cache/sub/logs/from-c1'
check "sp reads what c1 wrote in /cache/sub/logs on /logs" reads "$sp" /logs/from-c1 written-by-c1
cri exec "$sp" -- ls /logs
check "sp sees only the subPath on /logs (got '$(echo $out)')" test "$(echo $out)" = "from-c1 from-sp"
if [ "$handler" = rvm ]; then
    # A container of the pod puts a symlink where the host has the subPath's directory: the
    # VM's copy is not the host's, and the agent follows no symlink on a subPath.
    cri exec "$c1" -- ln -s / /cache/evil
    mkdir -p "$cache_dir/evil" "$subpaths/ev/0"
    mount --bind "$cache_dir/evil" "$subpaths/ev/0" || die "cannot bind the subPath"
    cri create --pod "$pod" --name ev --image "$image" --mount "$subpaths/ev/0:/evil" -- true
    ev=$out
    check "create ev with subPath evil (a symlink to / in the VM)" test "$status" -eq 0 -a -n "$ev"
    cri start "$ev"
    check "ev's subPath through a symlink is refused at start, by name ($err)" \
        test "$status" -ne 0 -a -z "${err##*evil is not a directory*}"
fi

# kubelet's termination message: an empty host file of its own (0666) bound writable on
# /dev/termination-log; what the container writes there is in that host file once it exited.
term_log=$(dirname "$volumes")/containers/term/0a1b2c3d
mkdir -p "$(dirname "$term_log")" && : >"$term_log" && chmod 0666 "$term_log"
cri create --pod "$pod" --name term --image "$image" --mount "$term_log:/dev/termination-log" \
    -- sh -c 'printf "lab-cri: done, status 3" >/dev/termination-log; exit 3'
term=$out
check "create term (writes /dev/termination-log and exits 3)" test "$status" -eq 0 -a -n "$term"
cri start "$term"
check "start term" test "$status" -eq 0
check "term is CONTAINER_EXITED" within 60 container_state "$term" CONTAINER_EXITED
check "term exited 3 (exit_code $(field exit_code))" test "$(field exit_code)" = 3
check "the host's termination message file holds what term wrote (got '$(cat "$term_log")')" \
    test "$(cat "$term_log")" = "lab-cri: done, status 3"

if [ "$handler" = rvm ]; then
    # CRI's CreateContainer only records the container; the shim sees it at StartContainer.
    cri create --pod "$pod" --name c3 --image "$image" --mount "$tmp/hostdata:/data" -- true
    c3=$out
    check "create c3 with a writable host directory (recorded by CRI)" test "$status" -eq 0 -a -n "$c3"
    cri start "$c3"
    check "c3's writable host directory is refused at start, by name ($err)" \
        test "$status" -ne 0 -a -z "${err##*/data*}" -a -z "${err##*not shared*}"
fi

cri exec "$c1" -- ip -4 addr show eth0
check "c1's eth0 has the pod's IP $pod_ip" grep -q "inet $pod_ip/" "$tmp/out"

# Traffic through the CNI bridge both ways (with rvm: the pod's veth, tc, the TAP, virtio-net).
gateway=${subnet%.0/24}.1
check "the host reaches the pod's IP $pod_ip (ping over $bridge)" ping_ok "$pod_ip"
cri exec "$c2" -- ping -c 3 -W 5 "$gateway"
check "the pod reaches its gateway $gateway (ping from c2)" test "$status" -eq 0

# A pod container that controls the VM's network stack (NET_ADMIN) forges its source: another
# address of the pod's subnet, then another MAC. With rvm the filters on the pod's TAP let only
# the pod's own MAC and address out (issue 22); with runc on the same CNI bridge the forged
# address gets through, which shows the attack is real.
cri create --pod "$pod" --name spoofer --image "$image" --cap-add NET_ADMIN -- sh -c \
    'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'
spoofer=$out
check "create spoofer (NET_ADMIN)" test "$status" -eq 0 -a -n "$spoofer"
cri start "$spoofer"
check "start spoofer" test "$status" -eq 0
forged_ip=${subnet%.0/24}.250
cri exec "$spoofer" -- sh -c "ip addr add $forged_ip/24 dev eth0 && ping -c 2 -W 3 -I $forged_ip $gateway; s=\$?; ip addr del $forged_ip/24 dev eth0; exit \$s"
forged=$status
if [ "$handler" = rvm ]; then
    check "a forged source address ($forged_ip) gets nothing through the pod's TAP" test "$forged" -ne 0
    cri exec "$spoofer" -- sh -c "m=\$(cat /sys/class/net/eth0/address); ip link set eth0 address 02:de:ad:be:ef:01 && ping -c 2 -W 3 $gateway; s=\$?; ip link set eth0 address \$m; exit \$s"
    check "a forged MAC gets nothing through the pod's TAP" test "$status" -ne 0
else
    check "with $handler the forged source address ($forged_ip) reaches the gateway (the attack is real)" test "$forged" -eq 0
fi
cri exec "$spoofer" -- ping -c 3 -W 5 "$gateway"
check "the pod's own address and MAC still reach the gateway" test "$status" -eq 0

check "c1's stdout is in the pod's log directory (c1.log)" within 30 grep -q c1-ready "$logdir/c1.log"

if [ "$handler" = rvm ]; then
    vmms=$(count "$tmp/bin/rvm-vmm")
    shims=$(count "$tmp/bin/containerd-shim-rvm-v1")
    check "one rvm-vmm serves the pod (found $vmms)" test "$vmms" -eq 1
    check "one containerd-shim-rvm-v1 serves the pod (found $shims)" test "$shims" -eq 1

    # The pod VM's size (see the header); the overhead as the runtime defines it.
    overhead_mib=$(sed -n 's/^pub const VM_OVERHEAD_MIB: u64 = \([0-9]*\);$/\1/p' \
        "$repo/runtime/src/sandbox/prepare.rs")
    vm_kib=$(((pod_memory >> 10) + (${overhead_mib:-0} << 10)))
    want_vcpus=$(((pod_cpu_quota + pod_cpu_period - 1) / pod_cpu_period))
    host_cpus=$(nproc)
    [ "$host_cpus" -ge "$want_vcpus" ] || want_vcpus=$host_cpus
    cri exec "$c1" -- nproc
    check "the pod's VM has $want_vcpus vCPUs (nproc in c1: $out)" test "$status" -eq 0 -a "$out" = "$want_vcpus"
    mem_kib=$(mem_total_kib)
    check "the guest's MemTotal (${mem_kib:-?} KiB) is above the pod's $((pod_memory >> 10)) KiB and at most the VM's $vm_kib KiB" \
        test -n "$overhead_mib" -a -n "$mem_kib" -a "${mem_kib:-0}" -gt "$((pod_memory >> 10))" -a "${mem_kib:-0}" -le "$vm_kib"
else
    say "VM size checks skipped: $handler pods see the host"
fi

cri stop "$c1" --grace 10
check "stop c1" test "$status" -eq 0
check "c1 is CONTAINER_EXITED" within 30 container_state "$c1" CONTAINER_EXITED
check "c1 exited with the TERM trap's 0 (exit_code $(field exit_code))" test "$(field exit_code)" = 0

cri stopp "$pod"
check "stopp" test "$status" -eq 0
cri rmp "$pod"
check "rmp" test "$status" -eq 0
# Removed: nothing for the cleanup to remove (else it tries again).
[ "$status" -ne 0 ] || pod=
cri pods
check "the pod is gone from pods" test "$status" -eq 0 -a "$(field 0.id)" = ""

# --- nothing left behind ---------------------------------------------------------------------------
if [ "$handler" = rvm ]; then
    no_rvm_process() { [ "$(count "$tmp/bin/rvm-vmm|$tmp/bin/containerd-shim-rvm-v1")" -eq 0 ]; }
    check "no rvm-vmm or shim process left" within 20 no_rvm_process
fi
check "the pod's network namespace ${netns:-?} is gone" test -n "$netns" -a ! -e "$netns"
if [ "$handler" = runc ]; then
    check "no runc container of the pod left" test -z "$(ls "$tmp/runc/k8s.io" 2>/dev/null)"
fi

# --- a pod sharing one pid namespace (shareProcessNamespace) ------------------------------------
cri runp --name lab-cri-pid-pod --handler "$handler" --share-pid
pod=$out
need "runp --share-pid prints a pod id" test "$status" -eq 0 -a -n "$pod"
cri inspectp "$pod"
need "the shared-pid pod is SANDBOX_READY" test "$(field state)" = SANDBOX_READY
cri create --pod "$pod" --name p1 --image "$image" -- sh -c \
    'trap "exit 0" TERM; while :; do sleep 3601 & wait $!; done'
p1=$out
need "create p1" test "$status" -eq 0 -a -n "$p1"
cri create --pod "$pod" --name p2 --image "$image" -- sh -c \
    'trap "exit 0" TERM; while :; do sleep 3602 & wait $!; done'
p2=$out
need "create p2" test "$status" -eq 0 -a -n "$p2"
cri start "$p1"
need "start p1" test "$status" -eq 0
cri start "$p2"
need "start p2" test "$status" -eq 0
need "p1 is CONTAINER_RUNNING" within 30 container_state "$p1" CONTAINER_RUNNING
need "p2 is CONTAINER_RUNNING" within 30 container_state "$p2" CONTAINER_RUNNING
# sees ARGS CONTAINER: whether a process with command line ARGS is in CONTAINER's ps.
sees() {
    cri exec "$2" -- ps -o args
    [ "$status" -eq 0 ] && grep -qx "$1" "$tmp/out"
}
check "p2 sees p1's process (sleep 3601) in its ps" within 20 sees "sleep 3601" "$p2"
check "p1 sees p2's process (sleep 3602) in its ps" within 20 sees "sleep 3602" "$p1"
check "p1 sees the pause process's child (sleep 3600) in its ps" sees "sleep 3600" "$p1"
cri exec "$p1" -- sh -c "tr '\\0' ' ' </proc/1/cmdline"
check "PID 1 of p1's pid namespace is the pause process, not p1 (got '$out')" \
    test "$status" -eq 0 -a -z "${out##sh -c trap*sleep 3600*}"
cri stop "$p1" --grace 10
check "stop p1 (not PID 1: its TERM trap ends it)" test "$status" -eq 0
check "p1 is CONTAINER_EXITED" within 30 container_state "$p1" CONTAINER_EXITED
check "p1 exited with the TERM trap's 0 (exit_code $(field exit_code))" test "$(field exit_code)" = 0
# unseen ARGS CONTAINER: whether CONTAINER's ps runs and lists no process ARGS.
unseen() {
    cri exec "$2" -- ps -o args
    [ "$status" -eq 0 ] && ! grep -qx "$1" "$tmp/out"
}
check "p1's orphaned sleep 3601 died with p1 (gone from p2's ps)" within 20 unseen "sleep 3601" "$p2"
check "p2 still runs (sleep 3602 in its ps)" sees "sleep 3602" "$p2"
cri stopp "$pod"
check "stopp the shared-pid pod" test "$status" -eq 0
cri rmp "$pod"
check "rmp the shared-pid pod" test "$status" -eq 0
[ "$status" -ne 0 ] || pod=
if [ "$handler" = rvm ]; then
    check "no rvm-vmm or shim process left after the shared-pid pod" within 20 no_rvm_process
fi

[ "$failures" -eq 0 ] || containerd_log_tail
echo "lab-cri: $failures failure(s)"
[ "$failures" -eq 0 ]
