//! Limits on work that costs an RSA operation before the caller is
//! authenticated (handshakes, signed resets): a token bucket per source, and
//! one global bucket that caps the total whatever the number of sources.
//!
//! IPv6 sources are bucketed by /64, since one host typically owns a whole /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::engine::Throttled;

/// Most buckets kept; past that they are all forgotten (the global bucket still holds).
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Token buckets keyed by source, plus a global one.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    global_per_second: f64,
    buckets: Mutex<(HashMap<String, Bucket>, Bucket)>,
}

/// The bucket key of a source address: IPv6 by /64, anything else as given.
pub fn source_key(source: &str) -> String {
    match source.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => source.to_string(),
    }
}

impl RateLimiter {
    /// `per_second` sustained and `burst` at once per source; the global bucket
    /// allows 20 times one source's rate (and burst).
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self::with_global(per_second, burst, per_second * 20.0)
    }

    /// With an explicit global rate.
    pub fn with_global(per_second: f64, burst: f64, global_per_second: f64) -> Self {
        let global = Bucket { tokens: burst * 20.0, at: Instant::now() };
        Self { per_second, burst, global_per_second, buckets: Mutex::new((HashMap::new(), global)) }
    }

    /// No limit (in-process callers, benchmarks).
    pub fn unlimited() -> Self {
        Self::new(f64::INFINITY, f64::INFINITY)
    }

    /// Takes one token for `source`; `None` (in-process callers) is never limited.
    pub fn check(&self, source: Option<&str>) -> Result<(), Throttled> {
        let Some(src) = source else { return Ok(()) };
        if self.per_second.is_infinite() {
            return Ok(());
        }
        let now = Instant::now();
        let mut guard = self.buckets.lock().expect("not poisoned");
        let (buckets, global) = &mut *guard;
        if buckets.len() >= MAX_BUCKETS {
            buckets.clear();
        }
        let b = buckets.entry(source_key(src)).or_insert(Bucket { tokens: self.burst, at: now });
        if !b.take(now, self.per_second, self.burst) {
            return Err(Throttled);
        }
        if !global.take(now, self.global_per_second, self.burst * 20.0) {
            return Err(Throttled);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_source_and_refill() {
        let l = RateLimiter::new(10.0, 2.0);
        assert!(l.check(Some("10.0.0.1")).is_ok());
        assert!(l.check(Some("10.0.0.1")).is_ok());
        assert_eq!(l.check(Some("10.0.0.1")), Err(Throttled));
        assert!(l.check(Some("10.0.0.2")).is_ok(), "another source has its own bucket");
        assert!(l.check(None).is_ok(), "in-process callers are not limited");
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(l.check(Some("10.0.0.1")).is_ok(), "refilled at 10/s");
        assert!(RateLimiter::unlimited().check(Some("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_is_bucketed_by_64() {
        let l = RateLimiter::new(0.001, 1.0);
        assert!(l.check(Some("2001:db8:1:2::1")).is_ok());
        assert_eq!(l.check(Some("2001:db8:1:2::ffff")), Err(Throttled), "same /64");
        assert!(l.check(Some("2001:db8:1:3::1")).is_ok(), "another /64");
        assert_eq!(source_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
    }

    #[test]
    fn the_global_bucket_caps_many_sources() {
        let l = RateLimiter::with_global(0.001, 1.0, 0.001);
        let ok = (0..100).filter(|i| l.check(Some(&format!("10.0.{}.{}", i / 256, i % 256))).is_ok()).count();
        assert_eq!(ok, 20, "the global burst (20 x one source's) is all that passes");
    }
}
