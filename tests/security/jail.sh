#!/bin/bash
# tests/security/jail.sh: every rvm-vmm runs jailed (issue 21), in the lab with the real rvm-vmm,
# guest kernel and rvm-agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- tests/security/jail.sh
#
# Two containers started by `rvm run -d`: each VMM (every thread) runs as its own non-root user
# with no capabilities, no_new_privs and its seccomp filter, PID 1 of new namespaces, in an
# empty root, in a cgroup with limits; `rvm inspect` says so. Then a compromised VMM (the
# debug-only RVM_VMM_ATTACK hook): each attack is refused by the jail alone, and repeated under
# the filter, kills the VMM with SIGSYS before the guest runs.
set -uo pipefail
e2e_name=security-jail
command_timeout=${RVM_E2E_TIMEOUT:-300}
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh" || exit 1
# shellcheck source-path=SCRIPTDIR source=jail-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/jail-lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4
e2e_setup_root
e2e_load_image

# inspect_field CONTAINER KEY...: one value of `rvm inspect CONTAINER` (JSON for objects).
inspect_field() {
    "$rvm" --root "$root" inspect "$1" 2>/dev/null | python3 -c '
import json, sys
value = json.load(sys.stdin)[0]
for key in sys.argv[1:]:
    value = (value or {}).get(key)
print(json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else value)
' "${@:2}"
}
vmm_pid() { inspect_field "$1" VM Vmm; }

r run -d --name jailed-a busybox sleep 600
check "a first container starts" test "$status" -eq 0
r run -d --name jailed-b busybox sleep 600
check "a second container starts" test "$status" -eq 0
until_ok 120 eval '[ "$(inspect_field jailed-b State Status)" = running ]'
pid_a=$(vmm_pid jailed-a) pid_b=$(vmm_pid jailed-b)
jail_check_vmm "$pid_a" "rvm run (a)"
uid_a=$jail_uid
jail_check_vmm "$pid_b" "rvm run (b)"
uid_b=$jail_uid
check "two running VMs never share a user ($uid_a, $uid_b)" test "$uid_a" != "$uid_b"
out=$(inspect_field jailed-a VM Jail)
check "rvm inspect shows the jail's uid, root and seccomp mode ($out)" \
    eval 'grep -q "\"Uid\":$uid_a" <<<"$out" && grep -q "\"Seccomp\":\"enforce\"" <<<"$out" && grep -q "\"Root\":\"/" <<<"$out"'
r exec jailed-a echo still-works
check "the jailed VM serves exec" eval 'test "$status" -eq 0 && grep -q still-works <<<"$out"'
r rm -f jailed-a jailed-b
check "both are removed" test "$status" -eq 0
check "their cgroups are gone" eval '! ls -d /sys/fs/cgroup/rvm/*/ 2>/dev/null | grep -q .'

# The compromised VMM: one VM start per attack made under the filter; each dies before its guest
# boots, so these cost little.
for attack in open-shadow connect-containerd execve unlink-host-file; do
    RVM_VMM_ATTACK=$attack r run --name "attack-$attack" busybox true
    id=$(inspect_field "attack-$attack" Id)
    log=$root/containers/$id/vmm.log
    check "attack $attack: rvm run fails" test "$status" -ne 0
    check "attack $attack: every attack was refused by the jail alone" \
        eval '[ "$(grep -c "denied by the jail" "$log")" -eq 7 ] && ! grep -q SUCCEEDED "$log"'
    check "attack $attack: repeated under the filter, it killed the VMM (SIGSYS)" \
        eval 'grep -q "is not in the VMM.s allowlist" "$log" && ! grep -q SURVIVED "$log"'
    check "attack $attack: the container's status names the signal (159 = 128 + SIGSYS)" \
        eval 'inspect_field "attack-$attack" State Error | grep -q "signal 31"'
done
e2e_finish
