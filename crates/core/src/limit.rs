//! Per-caller limits on the KMS relay.
//!
//! Why they exist: a KMS throttles the work it must do before it knows who
//! is asking (handshakes and signed 499 resets: RSA operations) per source
//! address, and every message the core relays comes from the core's address
//! (or from the KMS's one link to the core). Without a limit here, one user
//! posting garbage through the relay would spend the whole org's budget at
//! its KMS, and the org's real users would get 429s on their handshakes.
//!
//! So each caller (the user id the core authenticated) has a token bucket. A
//! batch costs its number of messages, all or nothing; a refused request
//! costs nothing. The core cannot tell a KMS message that will be cheap for
//! the KMS (a valid session request) from one that will cost it a signature
//! (garbage, a stale session): both are opaque JWEs. So every message counts.
//!
//! Memory is bounded: at most `max_callers` buckets. When a new caller would
//! exceed that, buckets that have refilled completely are dropped first (a
//! full bucket is the same as none); if every bucket is still in use, the
//! least recently used one goes (a flooder uses its bucket all the time, so
//! it is never the one forgotten).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why the relay refused a caller's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not enough tokens now; enough after this long.
    Throttled {
        /// How long until the request would pass (rounded up to whole seconds, at least 1 s).
        retry_after: Duration,
    },
    /// A batch larger than the burst: it would never pass, whatever the wait.
    TooLarge {
        /// The burst (most messages at once).
        burst: u32,
    },
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
    }

    fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }
}

/// Token buckets keyed by caller.
pub struct CallerLimiter {
    per_second: f64,
    burst: u32,
    max_callers: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl CallerLimiter {
    /// `per_second` sustained and `burst` at once per caller, for at most
    /// `max_callers` callers tracked at a time.
    pub fn new(per_second: f64, burst: u32, max_callers: usize) -> Self {
        Self { per_second, burst, max_callers: max_callers.max(1), buckets: Mutex::default() }
    }

    /// The sustained rate per caller.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// The most messages a caller may send at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Takes `n` tokens for `caller`, or none.
    pub fn take(&self, caller: &str, n: u32) -> Result<(), Refused> {
        self.take_at(caller, n, Instant::now())
    }

    /// [`Self::take`] at a given time (tests).
    pub fn take_at(&self, caller: &str, n: u32, now: Instant) -> Result<(), Refused> {
        if n > self.burst {
            return Err(Refused::TooLarge { burst: self.burst });
        }
        let (rate, burst) = (self.per_second, f64::from(self.burst));
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if !buckets.contains_key(caller) && buckets.len() >= self.max_callers {
            buckets.retain(|_, b| !b.is_full(now, rate, burst));
            if buckets.len() >= self.max_callers {
                let lru = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone());
                if let Some(k) = lru {
                    buckets.remove(&k);
                }
            }
        }
        let b = buckets.entry(caller.to_string()).or_insert(Bucket { tokens: burst, at: now });
        b.refill(now, rate, burst);
        let n = f64::from(n);
        if b.tokens >= n {
            b.tokens -= n;
            return Ok(());
        }
        let wait = ((n - b.tokens) / rate).ceil().max(1.0);
        Err(Refused::Throttled { retry_after: Duration::from_secs(wait.min(86_400.0) as u64) })
    }

    /// How many callers are tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().expect("not poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_the_rate_per_caller() {
        let l = CallerLimiter::new(2.0, 10, 100);
        let t0 = Instant::now();
        assert_eq!(l.take_at("bob@acme.example", 10, t0), Ok(()));
        assert_eq!(
            l.take_at("bob@acme.example", 1, t0),
            Err(Refused::Throttled { retry_after: S }),
            "empty: one token comes back in half a second, said as 1 s"
        );
        assert_eq!(l.take_at("alice@acme.example", 10, t0), Ok(()), "another caller has its own bucket");
        // Refilled at 2 per second, never above the burst.
        assert_eq!(l.take_at("bob@acme.example", 2, t0 + S), Ok(()));
        assert!(l.take_at("bob@acme.example", 1, t0 + S).is_err());
        assert_eq!(l.take_at("bob@acme.example", 10, t0 + 100 * S), Ok(()), "full again, capped at the burst");
        assert!(l.take_at("bob@acme.example", 1, t0 + 100 * S).is_err());
    }

    #[test]
    fn a_batch_costs_its_size_all_or_nothing() {
        let l = CallerLimiter::new(1.0, 10, 100);
        let t0 = Instant::now();
        assert_eq!(l.take_at("bob", 7, t0), Ok(()));
        // 3 left: a batch of 5 is refused whole, and takes nothing.
        assert_eq!(l.take_at("bob", 5, t0), Err(Refused::Throttled { retry_after: 2 * S }));
        assert_eq!(l.take_at("bob", 3, t0), Ok(()), "the refusal cost nothing");
        assert_eq!(l.take_at("bob", 11, t0 + 100 * S), Err(Refused::TooLarge { burst: 10 }));
        assert_eq!(l.take_at("bob", 10, t0 + 100 * S), Ok(()), "too large cost nothing either");
    }

    #[test]
    fn memory_is_bounded_and_flooders_are_not_forgotten() {
        let l = CallerLimiter::new(1.0, 5, 3);
        let t0 = Instant::now();
        // Three callers, none of them back to a full bucket; the flooder has emptied its own.
        assert_eq!(l.take_at("a", 3, t0), Ok(()));
        assert_eq!(l.take_at("flood", 5, t0 + S), Ok(()));
        assert_eq!(l.take_at("b", 1, t0 + S), Ok(()));
        // A fourth caller while all three are in use: the least recently used ("a") goes.
        assert_eq!(l.take_at("c", 1, t0 + S), Ok(()));
        assert_eq!(l.tracked(), 3);
        assert!(l.take_at("flood", 5, t0 + S).is_err(), "the flooder's bucket is still there, still empty");
        // Later, the idle buckets (full again) are dropped first.
        let later = t0 + 10 * S;
        assert!(l.take_at("flood", 5, later).is_ok());
        assert_eq!(l.take_at("d", 1, later), Ok(()));
        assert_eq!(l.tracked(), 2, "b and c had refilled and were dropped; the flooder and d remain");
        assert!(l.take_at("flood", 1, later).is_err());
    }
}
