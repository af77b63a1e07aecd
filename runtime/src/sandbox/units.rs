//! Docker's resource notations: memory sizes (`512m`, `1g`, `1024k`, plain bytes) and CPU counts
//! (`1.5`), turned into the VM size and the container's cgroup limits.

use thiserror::Error;

/// Docker refuses smaller memory limits.
pub const MIN_MEMORY: u64 = 6 << 20;
/// cpu.max period (µs) used with `--cpus`, as Docker does.
pub const CPU_PERIOD: u64 = 100_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error(
        "invalid size: {0:?} (expected a number with an optional unit b, k, m or g, e.g. 512m)"
    )]
    BadSize(String),
    #[error("minimum memory limit allowed is 6MB, got {0:?}")]
    TooSmall(String),
    #[error("invalid value {0:?} for --cpus: expected a positive decimal number such as 1.5")]
    BadCpus(String),
    #[error("range of CPUs is from 0.01 to {max}.00, as there are only {max} CPUs available")]
    TooManyCpus { max: u32 },
}

/// Parses a byte size in Docker's notation (`RAMInBytes`): binary units, case-insensitive, an
/// optional trailing `b`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::BadSize(text.to_owned());
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let multiplier: u64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" if unit.is_empty() || unit == "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let bytes = value * multiplier as f64;
    if bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses `--memory`: a size of at least [`MIN_MEMORY`].
pub fn parse_memory(text: &str) -> Result<u64, UnitError> {
    let bytes = parse_size(text)?;
    if bytes < MIN_MEMORY {
        return Err(UnitError::TooSmall(text.to_owned()));
    }
    Ok(bytes)
}

/// A `--cpus` value: the vCPUs of the VM and the cpu.max quota of the container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cpus {
    pub value: f64,
}

impl Cpus {
    /// Parses `--cpus`, refusing more than `available` CPUs as Docker does.
    pub fn parse(text: &str, available: u32) -> Result<Self, UnitError> {
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| UnitError::BadCpus(text.to_owned()))?;
        if !value.is_finite() || value < 0.01 {
            return Err(UnitError::BadCpus(text.to_owned()));
        }
        if value > f64::from(available) {
            return Err(UnitError::TooManyCpus { max: available });
        }
        Ok(Self { value })
    }

    /// Whole vCPUs needed to give the container this much CPU time.
    pub fn vcpus(self) -> u32 {
        self.value.ceil().max(1.0) as u32
    }

    /// The cpu.max quota in µs per [`CPU_PERIOD`].
    pub fn quota(self) -> i64 {
        (self.value * CPU_PERIOD as f64).round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_docker_notation() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1024k"), Ok(1 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("100b"), Ok(100));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_text() {
        for text in ["", "m", "12x", "-5m", "1.2.3g", "ten"] {
            let error = parse_size(text).unwrap_err();
            assert!(error.to_string().contains(&format!("{text:?}")), "{error}");
        }
    }

    #[test]
    fn memory_below_six_megabytes_is_refused() {
        assert_eq!(parse_memory("4m"), Err(UnitError::TooSmall("4m".into())));
        assert_eq!(parse_memory("6m"), Ok(6 << 20));
    }

    #[test]
    fn cpus_give_vcpus_and_quota() {
        let cpus = Cpus::parse("1.5", 4).unwrap();
        assert_eq!(cpus.vcpus(), 2);
        assert_eq!(cpus.quota(), 150_000);
        assert_eq!(Cpus::parse("0.5", 4).unwrap().vcpus(), 1);
        assert!(matches!(Cpus::parse("0", 4), Err(UnitError::BadCpus(_))));
        assert!(matches!(Cpus::parse("abc", 4), Err(UnitError::BadCpus(_))));
        assert_eq!(Cpus::parse("8", 2), Err(UnitError::TooManyCpus { max: 2 }));
    }
}
