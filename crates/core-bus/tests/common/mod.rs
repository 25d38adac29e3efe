//! Shared test helpers: NATS reachability rules, receive-with-timeout.
#![allow(dead_code)]

use std::time::Duration;

use core_bus::{Notice, Subscription};

/// Where the NATS server of the tests is.
pub fn nats_url() -> String {
    std::env::var("CUSTOS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// True in CI, where a missing NATS server is a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty())
}

/// A missing prerequisite: fail in CI, otherwise print the skip line and let the test pass.
pub fn skip_or_fail(what: &str, test: &str, error: &dyn std::fmt::Display) {
    if in_ci() {
        panic!("{what} ({error}) and CI is set: {test}");
    }
    println!("SKIPPED ({what}): {test}");
}

/// A subject prefix unique to one test, so parallel tests and CI runs don't cross-talk.
pub fn unique_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// The next notice, failing the test after 10 s.
pub async fn recv(sub: &mut Subscription) -> Notice {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(n)) => n,
        Ok(None) => panic!("subscription of {} closed", sub.space_id()),
        Err(_) => panic!("no notice for {} within 10 s", sub.space_id()),
    }
}

/// Fails if a notice arrives within `ms` milliseconds.
pub async fn assert_silent(sub: &mut Subscription, ms: u64) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        panic!("{} expected nothing, got {got:?}", sub.space_id());
    }
}

pub fn notice(space: &str, seq: i64) -> Notice {
    Notice::new(space, seq).expect("valid notice")
}
