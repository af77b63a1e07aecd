# tests/security/jail-lib.sh: checks that a running rvm-vmm is jailed (issue 21), sourced by
# tests/security/jail.sh (containers started by `rvm run`) and shim/tests/lab-cri.sh (a pod).
# Needs `check` (tests/e2e/lib.sh or the caller's own).

# jail_check_vmm PID WHAT: every thread of the VMM PID runs as a non-root uid/gid with no
# capabilities, no_new_privs and seccomp mode 2; its root holds nothing of the host; it is PID 1
# of its own PID namespace and in its own mount, IPC and UTS namespaces; its cgroup has limits.
# Sets $jail_uid to its uid.
jail_check_vmm() {
    local pid=$1 what=$2 task status bad=""
    jail_uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    for task in /proc/"$pid"/task/*; do
        status=$(cat "$task/status" 2>/dev/null) || continue
        awk '/^Uid:/ {for (i = 2; i <= 5; i++) if ($i == 0) exit 1}' <<<"$status" || bad+=" $task:uid0"
        awk '/^Gid:/ {for (i = 2; i <= 5; i++) if ($i == 0) exit 1}' <<<"$status" || bad+=" $task:gid0"
        for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
            grep -q "^$cap:[[:space:]]*0000000000000000$" <<<"$status" || bad+=" $task:$cap"
        done
        grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$status" || bad+=" $task:nnp"
        grep -q '^Seccomp:[[:space:]]*2$' <<<"$status" || bad+=" $task:seccomp"
        grep -q '^Groups:[[:space:]]*$' <<<"$status" || bad+=" $task:groups"
    done
    check "$what: the VMM runs as an unprivileged user (uid ${jail_uid:-?})" \
        test -n "$jail_uid" -a "${jail_uid:-0}" -ge 1000
    check "$what: every VMM thread: uid/gid not 0, no capabilities, no_new_privs, seccomp filter${bad:+ (broken:$bad)}" \
        test -z "$bad" -a "$(ls "/proc/$pid/task" | wc -l)" -ge 2
    check "$what: the VMM's root holds nothing of the host" \
        test -z "$(ls -A "/proc/$pid/root/" 2>&1)" -a ! -e "/proc/$pid/root/etc"
    check "$what: the VMM is PID 1 of its own PID namespace" \
        grep -q '^NSpid:[[:space:]]*[0-9]*[[:space:]]1$' "/proc/$pid/status"
    check "$what: the VMM's limits: 4096 descriptors, 256 tasks, no core dump" \
        eval 'grep -Eq "^Max open files +4096 +4096" "/proc/$pid/limits" &&
              grep -Eq "^Max processes +256 +256" "/proc/$pid/limits" &&
              grep -Eq "^Max core file size +0 +0" "/proc/$pid/limits"'
    local ns
    for ns in mnt pid ipc uts; do
        check "$what: the VMM has its own $ns namespace" \
            test "$(readlink "/proc/$pid/ns/$ns")" != "$(readlink "/proc/1/ns/$ns")"
    done
    local cgroup
    cgroup=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
    check "$what: the VMM is in a cgroup of its own under /rvm ($cgroup)" \
        test "${cgroup#/rvm/}" != "$cgroup"
    local dir=/sys/fs/cgroup$cgroup
    check "$what: its cgroup limits memory, tasks and CPU" \
        eval 'grep -qv max "$dir/memory.max" && grep -qv max "$dir/pids.max" && grep -qv max "$dir/cpu.max"'
}
