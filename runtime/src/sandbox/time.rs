//! Timestamps as Docker writes them (RFC 3339 with nanoseconds, UTC) and the human durations of
//! `rvm ps` ("2 minutes ago", "Up 3 seconds"), and the times `rvm logs --since/--until` take.

use std::time::{Duration, SystemTime};

/// Now, as RFC 3339 with nanoseconds.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// A time as RFC 3339 with nanoseconds.
pub fn format_rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Parses what [`format_rfc3339`] wrote.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// A point in time as Docker's `--since` and `--until` take it: an RFC 3339 timestamp
/// (`2026-12-04T03:00:00Z`, `2026-12-04T03:00:00.5Z`), Unix seconds with an optional fraction
/// (`1764817200`, `1764817200.5`), or a duration before `now` (`10m`, `1h30m`, `90s`).
pub fn parse_point(text: &str, now: SystemTime) -> Option<SystemTime> {
    if let Some(time) = parse_rfc3339(text) {
        return Some(time);
    }
    if let Some(seconds) = parse_unix(text) {
        return SystemTime::UNIX_EPOCH.checked_add(seconds);
    }
    let ago = humantime::parse_duration(text).ok()?;
    now.checked_sub(ago)
}

/// `1764817200` or `1764817200.123456789`.
fn parse_unix(text: &str) -> Option<Duration> {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let (whole, nanos) = match text.split_once('.') {
        None => (text, 0),
        Some((whole, fraction)) if digits(fraction) && fraction.len() <= 9 => {
            (whole, format!("{fraction:0<9}").parse::<u32>().ok()?)
        }
        Some(_) => return None,
    };
    if !digits(whole) {
        return None;
    }
    Some(Duration::new(whole.parse().ok()?, nanos))
}

/// How long ago `text` was, in Docker's words ("Less than a second", "5 seconds", "2 minutes").
pub fn human_since(text: &str) -> String {
    let elapsed = parse_rfc3339(text)
        .and_then(|then| SystemTime::now().duration_since(then).ok())
        .unwrap_or_default();
    human_duration(elapsed)
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match () {
        _ if seconds < 1 => "Less than a second".to_owned(),
        _ if seconds == 1 => "1 second".to_owned(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_nanoseconds() {
        let text = now_rfc3339();
        assert!(text.ends_with('Z'), "{text}");
        assert!(parse_rfc3339(&text).is_some());
    }

    #[test]
    fn points_in_time_as_docker_takes_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_817_200);
        let at = |text| parse_point(text, now);
        assert_eq!(at("2025-12-04T03:00:00Z"), Some(now));
        assert_eq!(at("1764817200"), Some(now));
        assert_eq!(at("1764817200.5"), Some(now + Duration::from_millis(500)));
        assert_eq!(at("10m"), Some(now - Duration::from_secs(600)));
        assert_eq!(at("1h30m"), Some(now - Duration::from_secs(5400)));
        for bad in ["", "yesterday", "12.", ".5", "1.1234567891", "-5", "10q"] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn human_durations_read_like_docker() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(70)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
    }
}
