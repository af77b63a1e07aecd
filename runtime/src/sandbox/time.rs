//! Timestamps as Docker writes them (RFC 3339 with nanoseconds, UTC) and the human durations of
//! `rvm ps` ("2 minutes ago", "Up 3 seconds").

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
