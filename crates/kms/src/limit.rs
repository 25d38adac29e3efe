//! Per-source rate limits for work that costs an RSA operation before the
//! caller is authenticated (handshakes, signed resets): a token bucket per source.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::engine::Throttled;

/// Token buckets keyed by source.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` sustained, `burst` at once, per source.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// No limit (in-process callers, benchmarks).
    pub fn unlimited() -> Self {
        Self::new(f64::INFINITY, f64::INFINITY)
    }

    /// Takes one token for `source`; `None` is never limited.
    pub fn check(&self, source: Option<&str>) -> Result<(), Throttled> {
        let Some(src) = source else { return Ok(()) };
        if self.per_second.is_infinite() {
            return Ok(());
        }
        let now = Instant::now();
        let mut b = self.buckets.lock().expect("not poisoned");
        if b.len() > 100_000 {
            // Forget full buckets first; they hold no information.
            let (ps, burst) = (self.per_second, self.burst);
            b.retain(|_, (t, at)| (*t + at.elapsed().as_secs_f64() * ps) < burst);
        }
        let (tokens, at) = b.entry(src.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Throttled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_source_and_refill() {
        let l = RateLimiter::new(10.0, 2.0);
        assert!(l.check(Some("a")).is_ok());
        assert!(l.check(Some("a")).is_ok());
        assert_eq!(l.check(Some("a")), Err(Throttled));
        assert!(l.check(Some("b")).is_ok(), "another source has its own bucket");
        assert!(l.check(None).is_ok(), "in-process callers are not limited");
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(l.check(Some("a")).is_ok(), "refilled at 10/s");
        assert!(RateLimiter::unlimited().check(Some("a")).is_ok());
    }
}
