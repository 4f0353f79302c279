//! Bounded exponential backoff for transient failures.
//!
//! Only [`Error::Transient`] is retried; any other error returns at once. Every request this
//! crate retries is idempotent (GET, HEAD, UploadPart of the same bytes under the same part
//! number, DELETE, …), which is why in-memory `Bytes` bodies are used everywhere.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Most attempts per request (the first try plus retries); the time budget usually ends
/// the retries first.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 30;
/// Wait before the first retry.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long a request keeps being retried after its first failure: long enough to ride out a
/// gateway restart (a 5-second radosgw restart made every export fail when the retries were
/// spent in 3 s), short enough that a gateway that stays down fails the job within about a
/// minute. No retry starts after it. Counted from the first failure, not the first attempt:
/// an attempt that hung until its request timeout (a gateway whose OSD paused) must not use
/// up the retries before the first one.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(60);

/// How often and how patiently to retry transient errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each further failure.
    pub initial_backoff: Duration,
    /// Cap on the wait.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first failure (the waits are shortened to
    /// fit); the last attempt itself is bounded by the request timeouts.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            budget: DEFAULT_RETRY_BUDGET,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            budget: Duration::ZERO,
        }
    }

    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }

    /// How long retries go on at the least (every wait jittered to its shortest) before the
    /// attempts or the budget end them.
    pub fn shortest_retry_window(&self) -> Duration {
        let waits = (1..self.max_attempts.max(1)).map(|a| self.backoff(a) / 2);
        waits.sum::<Duration>().min(self.budget)
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, or the attempts or the
    /// time budget are used up; then the last transient error comes back wrapped in
    /// [`Error::RetriesExhausted`].
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let max = self.max_attempts.max(1);
        let mut first_failure: Option<Instant> = None;
        let mut attempt = 1;
        loop {
            let error = match op().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            let failed_at = *first_failure.get_or_insert_with(Instant::now);
            let left = self.budget.saturating_sub(failed_at.elapsed());
            if attempt >= max || left.is_zero() {
                if max == 1 {
                    return Err(error);
                }
                tracing::debug!(attempts = attempt, cause = %error, "transient error, giving up");
                return Err(Error::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            let wait = jitter(self.backoff(attempt)).min(left);
            // The error names the request and the object (never a credential): the cause a
            // user needs when a job slows down.
            tracing::warn!(
                attempt,
                max_attempts = max,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                budget_left_s = left.as_secs(),
                cause = %error,
                "transient error, retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Scales `d` to between 50 % and 100 % so that parallel retries do not march in step.
fn jitter(d: Duration) -> Duration {
    // A cheap per-call pseudo-random fraction; quality does not matter here.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = 0.5 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> Error {
        Error::Transient {
            op: "Test",
            what: "x".into(),
            detail: "503".into(),
        }
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            budget: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(250));
        assert_eq!(p.backoff(2), Duration::from_millis(500));
        assert_eq!(p.backoff(4), Duration::from_secs(2));
        assert_eq!(p.backoff(10), DEFAULT_MAX_BACKOFF);
        assert_eq!(p.backoff(100), DEFAULT_MAX_BACKOFF);
    }

    #[test]
    fn the_default_policy_keeps_retrying_for_tens_of_seconds() {
        // Even with the shortest jitter, a gateway down for 30 s is ridden out.
        let p = RetryPolicy::default();
        assert!(
            p.shortest_retry_window() >= Duration::from_secs(30),
            "{p:?}"
        );
        assert!(p.budget <= Duration::from_secs(120), "{p:?}");
    }

    #[tokio::test]
    async fn retries_end_with_the_budget() {
        let p = RetryPolicy {
            max_attempts: 1000,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            budget: Duration::from_millis(300),
        };
        let started = Instant::now();
        let err = p
            .run(|| async { Err::<(), _>(transient()) })
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= p.budget && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(matches!(err, Error::RetriesExhausted { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_first_attempt_slower_than_the_budget_is_still_retried() {
        let p = RetryPolicy {
            max_attempts: 1000,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            budget: Duration::from_millis(200),
        };
        let calls = AtomicU32::new(0);
        let v = p
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    // A request that hung until its timeout, longer than the whole budget.
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    Err(transient())
                } else {
                    Ok(5)
                }
            })
            .await
            .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (5, 2));
    }

    #[tokio::test]
    async fn an_outage_shorter_than_the_budget_is_ridden_out() {
        let p = RetryPolicy {
            max_attempts: 1000,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            budget: Duration::from_secs(5),
        };
        let back = Instant::now() + Duration::from_millis(300);
        let v = p
            .run(|| async {
                if Instant::now() < back {
                    Err(transient())
                } else {
                    Ok(3)
                }
            })
            .await
            .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let v = fast(5)
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(transient())
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 4));
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let err = fast(3)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(transient())
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn permanent_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let err = fast(5)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::NotFound {
                    what: "s3://b/k".into(),
                })
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(err.is_not_found());
    }
}
