//! Reading a container's cgroup counters and its processes' /proc entries.

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use super::cgroups::{keyed, single, Cgroup};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoDevice {
    pub major: u32,
    pub minor: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
}

/// The counters of StatsResponse, in the same units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStats {
    pub cpu_usage_usec: u64,
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_usec: u64,
    pub memory_current: u64,
    pub memory_limit: u64,
    pub memory_swap_current: u64,
    pub memory_anon: u64,
    pub memory_file: u64,
    pub memory_kernel: u64,
    pub memory_oom_events: u64,
    pub memory_oom_kill_events: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub io: Vec<IoDevice>,
    pub read_at_unix_nanos: i64,
}

/// Parses io.stat lines: "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...".
pub fn parse_io_stat(text: &str) -> Vec<IoDevice> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut device = IoDevice {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for field in fields {
                let Some((key, value)) = field.split_once('=') else {
                    continue;
                };
                let value = value.parse().unwrap_or(0);
                match key {
                    "rbytes" => device.read_bytes = value,
                    "wbytes" => device.write_bytes = value,
                    "rios" => device.read_ios = value,
                    "wios" => device.write_ios = value,
                    _ => {}
                }
            }
            Some(device)
        })
        .collect()
}

pub fn read(cgroup: &Cgroup) -> ContainerStats {
    let cpu = cgroup.read_or_empty("cpu.stat");
    let memory = cgroup.read_or_empty("memory.stat");
    let events = cgroup.read_or_empty("memory.events");
    ContainerStats {
        cpu_usage_usec: keyed(&cpu, "usage_usec"),
        cpu_user_usec: keyed(&cpu, "user_usec"),
        cpu_system_usec: keyed(&cpu, "system_usec"),
        cpu_nr_periods: keyed(&cpu, "nr_periods"),
        cpu_nr_throttled: keyed(&cpu, "nr_throttled"),
        cpu_throttled_usec: keyed(&cpu, "throttled_usec"),
        memory_current: single(&cgroup.read_or_empty("memory.current")),
        memory_limit: single(&cgroup.read_or_empty("memory.max")),
        memory_swap_current: single(&cgroup.read_or_empty("memory.swap.current")),
        memory_anon: keyed(&memory, "anon"),
        memory_file: keyed(&memory, "file"),
        memory_kernel: keyed(&memory, "kernel"),
        memory_oom_events: keyed(&events, "oom"),
        memory_oom_kill_events: keyed(&events, "oom_kill"),
        pids_current: single(&cgroup.read_or_empty("pids.current")),
        pids_limit: single(&cgroup.read_or_empty("pids.max")),
        io: parse_io_stat(&cgroup.read_or_empty("io.stat")),
        read_at_unix_nanos: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    }
}

/// One process of ListProcesses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessEntry {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exec_id: String,
    pub command: String,
}

/// Reads /proc/PID/{stat,status,cmdline}; fields of a process that is gone are 0 or empty.
pub fn process_entry(pid: i32, exec_id: String) -> ProcessEntry {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name in parentheses may hold spaces: ppid is the second field after ')'.
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    ProcessEntry {
        pid: u32::try_from(pid).unwrap_or(0),
        ppid,
        uid,
        exec_id,
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_lines_parse() {
        let devices =
            parse_io_stat("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(
            devices,
            vec![IoDevice {
                major: 254,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                read_ios: 1,
                write_ios: 2
            }]
        );
    }

    #[test]
    fn own_process_entry() {
        let entry = process_entry(std::process::id() as i32, "x".into());
        assert!(entry.ppid > 0);
        assert!(!entry.command.is_empty());
    }
}
