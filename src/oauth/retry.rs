//! When to try the token endpoint again, and how long to wait first: exponential backoff with
//! jitter, or the server's `Retry-After` (RFC 9110 §10.2.3), capped.

use std::time::Duration;

/// How many attempts, and how long to wait between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub attempts: u32,
    /// The wait before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// No wait is longer than this, whatever `Retry-After` asks: a server asking for an hour
    /// should fail the run now rather than hang a CI job.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based). `Retry-After` wins when the
    /// server sent it; otherwise "full jitter" backoff, so that many CI jobs refused at the
    /// same moment do not come back at the same moment.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_delay);
        }
        let exponent = attempt.saturating_sub(1).min(16);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        // Between half the ceiling and the ceiling: never zero, never in lockstep.
        scale(ceiling, 0.5 + 0.5 * random_unit())
    }
}

/// `duration * fraction`, at most `duration`. Not `Duration::mul_f64`, which panics when a
/// duration near `Duration::MAX` rounds up past it as an f64.
fn scale(duration: Duration, fraction: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * fraction)
        .map_or(duration, |scaled| scaled.min(duration))
}

/// `Retry-After` as delay-seconds. The HTTP-date form is not read: token endpoints send
/// seconds in practice, and an unreadable value falls back to backoff, which is safe.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A number in [0, 1) from the operating system's randomness (through uuid's v4 source), so
/// that no extra dependency is needed for jitter.
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(3600))),
            policy.max_delay
        );
    }

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        let policy = RetryPolicy::default();
        for attempt in 1..=8 {
            let ceiling = policy
                .base_delay
                .saturating_mul(1 << (attempt - 1))
                .min(policy.max_delay);
            let wait = policy.wait(attempt, None);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{attempt}: {wait:?}"
            );
        }
        let waits: Vec<_> = (0..16).map(|_| policy.wait(3, None)).collect();
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "jitter varies the wait"
        );
    }

    #[test]
    fn huge_delays_do_not_overflow() {
        let policy = RetryPolicy {
            attempts: u32::MAX,
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
        };
        for attempt in [1, 2, 40, u32::MAX] {
            assert!(policy.wait(attempt, None) >= Duration::MAX / 2);
        }
        // The largest fraction random_unit can give.
        let top = 0.5 + 0.5 * ((1u64 << 53) - 1) as f64 / (1u64 << 53) as f64;
        assert!(scale(Duration::MAX, top) <= Duration::MAX);
        let asked = parse_retry_after(&u64::MAX.to_string());
        assert_eq!(policy.wait(1, asked), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
