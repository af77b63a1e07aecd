//! `rvm stats [--no-stream] [-a] [CONTAINER...]`: CPU, memory, network, block I/O and pids of
//! running containers, as Docker's table shows them. CPU % is the container's cgroup CPU time
//! over the wall time between two readings (100 % is one CPU); memory is the cgroup's usage
//! against its limit (the VM's memory when unlimited); NET I/O is what the VM's TAP carried;
//! BLOCK I/O the cgroup's io.stat. Without `--no-stream` the table is redrawn every second.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use rvm_protocol::agent::StatsResponse;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::{Container, Containers, Status};

use super::common::{self, report, EXIT_FAILED};
use super::container;
use super::human;

/// Between the two readings CPU % is computed from.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    no_stream: bool,
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    containers: Vec<String>,
}

/// One container's reading.
#[derive(Debug, Clone, Default)]
struct Reading {
    cpu_usec: u64,
    at_nanos: i64,
    memory: u64,
    limit: u64,
    net_rx: u64,
    net_tx: u64,
    block_read: u64,
    block_write: u64,
    pids: u64,
}

pub fn main(layout: &Layout, args: StatsArgs) -> i32 {
    let result = common::runtime().and_then(|runtime| runtime.block_on(stats(layout, &args)));
    match result {
        Ok(()) => 0,
        Err(err) => report(&err.context("Error response from daemon"), EXIT_FAILED),
    }
}

async fn stats(layout: &Layout, args: &StatsArgs) -> Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut before = readings(layout, args).await?;
    loop {
        tokio::time::sleep(INTERVAL).await;
        let after = readings(layout, args).await?;
        let mut out = String::new();
        if terminal && !args.no_stream {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&table(&before, &after));
        print!("{out}");
        std::io::stdout().flush()?;
        if args.no_stream {
            return Ok(());
        }
        before = after;
    }
}

/// The containers to show (named ones, else the running ones, else all with `-a`) and a reading
/// of each that runs.
async fn readings(layout: &Layout, args: &StatsArgs) -> Result<Vec<(Container, Option<Reading>)>> {
    let containers = container::open(layout)?;
    let chosen: Vec<Container> = if args.containers.is_empty() {
        containers
            .list()?
            .into_iter()
            .filter(|c| args.all || c.state.status() == Status::Running)
            .collect()
    } else {
        args.containers
            .iter()
            .map(|name| container::find(&containers, name))
            .collect::<Result<_>>()?
    };
    let mut out = Vec::new();
    for found in chosen {
        let reading = if found.state.status() == Status::Running {
            read(&containers, &found).await
        } else {
            None
        };
        out.push((found, reading));
    }
    Ok(out)
}

/// One reading of a running container; None when its agent cannot be asked (it is stopping).
async fn read(containers: &Containers, found: &Container) -> Option<Reading> {
    let id = &found.config.id;
    let session = container::connect(containers, id).await.ok()?;
    let stats = session.stats(id).await.ok()?;
    let (net_rx, net_tx) = found
        .config
        .endpoint
        .as_ref()
        .map_or((0, 0), |endpoint| tap_bytes(&endpoint.tap));
    Some(reading(
        &stats,
        found.config.vm.memory_mib << 20,
        net_rx,
        net_tx,
    ))
}

/// The guest's receive and transmit bytes: what the TAP sent and received on the host.
fn tap_bytes(tap: &str) -> (u64, u64) {
    let counter = |name: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/{name}"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    };
    (counter("tx_bytes"), counter("rx_bytes"))
}

fn reading(stats: &StatsResponse, vm_bytes: u64, net_rx: u64, net_tx: u64) -> Reading {
    let memory = stats.memory.as_ref();
    let limit = memory.map_or(0, |m| m.limit);
    let io = stats
        .io
        .as_ref()
        .map(|io| io.devices.as_slice())
        .unwrap_or(&[]);
    Reading {
        cpu_usec: stats.cpu.as_ref().map_or(0, |cpu| cpu.usage_usec),
        at_nanos: stats.read_at_unix_nanos,
        // Docker shows usage less the inactive page cache; the cgroup's anon and kernel memory
        // is the closest the agent reports.
        memory: memory.map_or(0, |m| m.current.saturating_sub(m.file)),
        limit: if limit == 0 || limit > vm_bytes {
            vm_bytes
        } else {
            limit
        },
        net_rx,
        net_tx,
        block_read: io.iter().map(|d| d.read_bytes).sum(),
        block_write: io.iter().map(|d| d.write_bytes).sum(),
        pids: stats.pids.as_ref().map_or(0, |p| p.current),
    }
}

/// CPU time over wall time between two readings, in percent of one CPU.
fn cpu_percent(before: &Reading, after: &Reading) -> f64 {
    let wall_usec = (after.at_nanos - before.at_nanos) as f64 / 1000.0;
    if wall_usec <= 0.0 || after.cpu_usec < before.cpu_usec {
        return 0.0;
    }
    (after.cpu_usec - before.cpu_usec) as f64 / wall_usec * 100.0
}

fn table(
    before: &[(Container, Option<Reading>)],
    after: &[(Container, Option<Reading>)],
) -> String {
    let header = [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ];
    let mut rows = Vec::new();
    for (found, now) in after {
        let id = found.config.id.chars().take(12).collect::<String>();
        let earlier = before
            .iter()
            .find(|(c, _)| c.config.id == found.config.id)
            .and_then(|(_, r)| r.as_ref());
        rows.push(match (now, earlier) {
            (Some(now), Some(earlier)) => row(id, &found.config.name, earlier, now),
            (Some(now), None) => row(id, &found.config.name, now, now),
            (None, _) => {
                let mut row =
                    ["--", "--", "--", "-- / --", "--", "--", "--", "--"].map(str::to_owned);
                row[0] = id;
                row[1] = found.config.name.clone();
                row
            }
        });
    }
    human::table(&header, &rows)
}

fn row(id: String, name: &str, before: &Reading, now: &Reading) -> [String; 8] {
    let memory_percent = if now.limit == 0 {
        0.0
    } else {
        now.memory as f64 / now.limit as f64 * 100.0
    };
    [
        id,
        name.to_owned(),
        format!("{:.2}%", cpu_percent(before, now)),
        format!(
            "{} / {}",
            human::binary_size(now.memory),
            human::binary_size(now.limit)
        ),
        format!("{memory_percent:.2}%"),
        format!("{} / {}", human::size(now.net_rx), human::size(now.net_tx)),
        format!(
            "{} / {}",
            human::size(now.block_read),
            human::size(now.block_write)
        ),
        now.pids.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_protocol::agent::{CpuStats, IoDeviceStats, IoStats, MemoryStats, PidsStats};

    fn stats(usage_usec: u64, at_nanos: i64, limit: u64) -> StatsResponse {
        let mut stats = StatsResponse::new();
        stats.cpu = Some(CpuStats {
            usage_usec,
            ..Default::default()
        })
        .into();
        stats.memory = Some(MemoryStats {
            current: 60 << 20,
            file: 10 << 20,
            limit,
            ..Default::default()
        })
        .into();
        stats.pids = Some(PidsStats {
            current: 3,
            ..Default::default()
        })
        .into();
        stats.io = Some(IoStats {
            devices: vec![
                IoDeviceStats {
                    read_bytes: 1_500_000,
                    write_bytes: 2_000,
                    ..Default::default()
                },
                IoDeviceStats {
                    read_bytes: 500_000,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .into();
        stats.read_at_unix_nanos = at_nanos;
        stats
    }

    #[test]
    fn a_reading_from_the_agents_counters() {
        let vm = 512 << 20;
        let r = reading(&stats(5_000, 0, 0), vm, 1_000, 2_000);
        assert_eq!(r.memory, 50 << 20);
        assert_eq!(r.limit, vm, "unlimited: the VM's memory");
        assert_eq!((r.block_read, r.block_write), (2_000_000, 2_000));
        assert_eq!(r.pids, 3);
        assert_eq!(reading(&stats(0, 0, 100 << 20), vm, 0, 0).limit, 100 << 20);
        assert_eq!(reading(&stats(0, 0, 4 << 30), vm, 0, 0).limit, vm);
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let before = reading(&stats(1_000_000, 1_000_000_000, 0), 1 << 30, 0, 0);
        // 1.5 s of CPU in 1 s: one and a half CPUs busy.
        let after = reading(&stats(2_500_000, 2_000_000_000, 0), 1 << 30, 0, 0);
        assert!((cpu_percent(&before, &after) - 150.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&after, &after), 0.0);
        assert_eq!(cpu_percent(&after, &before), 0.0);
        let r = row("abc".into(), "web", &before, &after);
        assert_eq!(r[2], "150.00%");
        assert_eq!(r[3], "50MiB / 1GiB");
        assert_eq!(r[4], "4.88%");
        assert_eq!(r[6], "2MB / 2kB");
        assert_eq!(r[7], "3");
    }
}
