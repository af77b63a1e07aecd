//! Rate limits for the log lines a guest can cause (a corrupt ring, a refused feature, a failed
//! request, a bad packet): without them a hostile guest repeating the cause writes a line each
//! time, as fast as it can, into the host's file behind the VMM's stderr.
//!
//! Each call site of [`warn_limited!`](crate::warn_limited) or
//! [`error_limited!`](crate::error_limited) has its own [`Limiter`]: the first [`BURST`]
//! messages of an [`INTERVAL`] are logged, the rest counted; the first message after the
//! interval is logged after one line saying how many were suppressed. The count is told when
//! the site fires again, as the kernel's `printk_ratelimit` does, so no thread or timer is
//! needed. Ours rather than a crate's: the rate-limiting crates (`governor` and the like)
//! answer allow or deny, and the counting and the summary line are the part we need.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages of one site logged per interval before the rest are suppressed.
pub const BURST: u32 = 10;
/// The length of a window.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// The counts of the current window.
#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// The rate limit of one call site.
#[derive(Debug)]
pub struct Limiter {
    burst: u32,
    interval: Duration,
    window: Mutex<Window>,
}

impl Limiter {
    /// A limiter of [`BURST`] messages per [`INTERVAL`], usable in a `static`.
    pub const fn new() -> Self {
        Self::with(BURST, INTERVAL)
    }

    /// A limiter of `burst` messages per `interval`.
    pub const fn with(burst: u32, interval: Duration) -> Self {
        Self {
            burst,
            interval,
            window: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log a message now: `Some(n)` to log it after saying that `n` (maybe 0) were
    /// suppressed before it, `None` to suppress it.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`Limiter::admit`] at time `now`.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means a thread panicked while holding it: the counts are fine.
        let mut window = match self.window.lock() {
            Ok(window) => window,
            Err(poisoned) => poisoned.into_inner(),
        };
        let expired = window
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            let suppressed = window.suppressed;
            *window = Window {
                start: Some(now),
                logged: 1,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if window.logged < self.burst {
            window.logged += 1;
            return Some(0);
        }
        window.suppressed += 1;
        None
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs at `level` through this call site's [`Limiter`]; used by [`warn_limited!`] and
/// [`error_limited!`](crate::error_limited).
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {{
        static LIMITER: $crate::logging::ratelimit::Limiter =
            $crate::logging::ratelimit::Limiter::new();
        if let Some(suppressed) = LIMITER.admit() {
            if suppressed > 0 {
                ::tracing::event!(
                    $level,
                    "{suppressed} similar messages suppressed ({}:{})",
                    file!(),
                    line!()
                );
            }
            ::tracing::event!($level, $($arg)+);
        }
    }};
}

/// `tracing::warn!` for a message a guest can cause, rate-limited per call site.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {
        $crate::log_limited!(::tracing::Level::WARN, $($arg)+)
    };
}

/// `tracing::error!` for a message a guest can cause, rate-limited per call site.
#[macro_export]
macro_rules! error_limited {
    ($($arg:tt)+) => {
        $crate::log_limited!(::tracing::Level::ERROR, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rest_is_counted() {
        let limiter = Limiter::with(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let verdicts: Vec<Option<u64>> = (0..6).map(|_| limiter.admit_at(t0)).collect();
        assert_eq!(verdicts, [Some(0), Some(0), Some(0), None, None, None]);
        // Still inside the window.
        assert_eq!(limiter.admit_at(t0 + Duration::from_secs(9)), None);
        // The next window opens with the count of the last one, once.
        assert_eq!(limiter.admit_at(t0 + Duration::from_secs(10)), Some(4));
        assert_eq!(limiter.admit_at(t0 + Duration::from_secs(10)), Some(0));
    }

    #[test]
    fn a_quiet_site_is_never_limited() {
        let limiter = Limiter::with(2, Duration::from_secs(1));
        let t0 = Instant::now();
        for second in 0..10 {
            assert_eq!(limiter.admit_at(t0 + Duration::from_secs(second)), Some(0));
        }
    }

    #[test]
    fn a_flood_logs_a_bounded_number_of_lines() {
        let limiter = Limiter::with(BURST, INTERVAL);
        let t0 = Instant::now();
        let mut lines = 0u64;
        let mut told = 0u64;
        // A million messages over ten minutes: ten windows.
        for n in 0..1_000_000u64 {
            let now = t0 + Duration::from_micros(n * 600);
            if let Some(suppressed) = limiter.admit_at(now) {
                lines += 1 + u64::from(suppressed > 0);
                told += suppressed;
            }
        }
        assert!(lines <= 10 * (u64::from(BURST) + 1), "{lines} lines");
        // What was neither logged nor told is the last window's, not yet told.
        assert!(told > 1_000_000 - 10 * u64::from(BURST) - 100_000, "{told}");
    }

    #[test]
    fn the_macros_compile_and_log() {
        for _ in 0..(BURST + 5) {
            crate::warn_limited!("test warning {}", 1);
            crate::error_limited!(code = 3, "test error");
        }
    }
}
