//! The agent's cgroup v2 counters as containerd's `io.containerd.cgroups.v2.Metrics`, the type
//! `ctr task metrics` and the CRI plugin decode.
//!
//! The message is written field by field from containerd/cgroups' `cgroup2/stats/metrics.proto`:
//! the shim protos crate for containerd 1.6's task API does not carry the v2 metrics types.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use rvm_protocol::agent::StatsResponse;
use rvm_protocol::protobuf::CodedOutputStream;

/// The type URL containerd registers the v2 metrics under.
pub const METRICS_V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// A protobuf message under construction: (field number, value) pairs.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn uint64(mut self, field: u32, value: u64) -> Self {
        if value != 0 {
            let mut out = CodedOutputStream::vec(&mut self.0);
            // Writing to a Vec cannot fail.
            let _ = out.write_uint64(field, value).and_then(|()| out.flush());
        }
        self
    }

    fn message(mut self, field: u32, message: Message) -> Self {
        let mut out = CodedOutputStream::vec(&mut self.0);
        let _ = out
            .write_bytes(field, &message.0)
            .and_then(|()| out.flush());
        drop(out);
        self
    }
}

/// Encodes `stats` as `io.containerd.cgroups.v2.Metrics`.
pub fn encode_v2(stats: &StatsResponse) -> Vec<u8> {
    let mut metrics = Message::default();
    if let Some(pids) = stats.pids.as_ref() {
        metrics = metrics.message(
            1,
            Message::default()
                .uint64(1, pids.current)
                .uint64(2, pids.limit),
        );
    }
    if let Some(cpu) = stats.cpu.as_ref() {
        metrics = metrics.message(
            2,
            Message::default()
                .uint64(1, cpu.usage_usec)
                .uint64(2, cpu.user_usec)
                .uint64(3, cpu.system_usec)
                .uint64(4, cpu.nr_periods)
                .uint64(5, cpu.nr_throttled)
                .uint64(6, cpu.throttled_usec),
        );
    }
    if let Some(memory) = stats.memory.as_ref() {
        metrics = metrics.message(
            4,
            Message::default()
                .uint64(1, memory.anon)
                .uint64(2, memory.file)
                .uint64(3, memory.kernel)
                .uint64(32, memory.current)
                .uint64(33, memory.limit)
                .uint64(34, memory.swap_current),
        );
        metrics = metrics.message(
            8,
            Message::default()
                .uint64(4, memory.oom_events)
                .uint64(5, memory.oom_kill_events),
        );
    }
    if let Some(io) = stats.io.as_ref() {
        let mut stat = Message::default();
        for device in &io.devices {
            stat = stat.message(
                1,
                Message::default()
                    .uint64(1, device.major.into())
                    .uint64(2, device.minor.into())
                    .uint64(3, device.read_bytes)
                    .uint64(4, device.write_bytes)
                    .uint64(5, device.read_ios)
                    .uint64(6, device.write_ios),
            );
        }
        metrics = metrics.message(6, stat);
    }
    metrics.0
}

/// `stats` packed for a Stats response.
pub fn to_any(stats: &StatsResponse) -> Any {
    Any {
        type_url: METRICS_V2_TYPE_URL.to_owned(),
        value: encode_v2(stats),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_protocol::agent::{CpuStats, MemoryStats, PidsStats};
    use rvm_protocol::protobuf::CodedInputStream;

    /// Reads (field, wire type, value or bytes) triples of one message level.
    fn fields(bytes: &[u8]) -> Vec<(u32, Result<u64, Vec<u8>>)> {
        let mut input = CodedInputStream::from_bytes(bytes);
        let mut out = Vec::new();
        while let Some(tag) = input.read_raw_tag_or_eof().unwrap() {
            let value = match tag & 7 {
                0 => Ok(input.read_uint64().unwrap()),
                2 => Err(input.read_bytes().unwrap()),
                other => panic!("wire type {other}"),
            };
            out.push((tag >> 3, value));
        }
        out
    }

    #[test]
    fn counters_land_in_the_v2_field_numbers() {
        let stats = StatsResponse {
            pids: Some(PidsStats {
                current: 3,
                limit: 100,
                ..Default::default()
            })
            .into(),
            cpu: Some(CpuStats {
                usage_usec: 1500,
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStats {
                current: 4096,
                limit: 1 << 20,
                oom_kill_events: 2,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let top = fields(&encode_v2(&stats));
        let numbers: Vec<u32> = top.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, vec![1, 2, 4, 8]);
        let Err(pids) = &top[0].1 else { panic!() };
        assert_eq!(fields(pids), vec![(1, Ok(3)), (2, Ok(100))]);
        let Err(cpu) = &top[1].1 else { panic!() };
        assert_eq!(fields(cpu), vec![(1, Ok(1500))]);
        let Err(memory) = &top[2].1 else { panic!() };
        assert_eq!(fields(memory), vec![(32, Ok(4096)), (33, Ok(1 << 20))]);
        let Err(events) = &top[3].1 else { panic!() };
        assert_eq!(fields(events), vec![(5, Ok(2))]);
        assert_eq!(to_any(&stats).type_url, "io.containerd.cgroups.v2.Metrics");
    }
}
