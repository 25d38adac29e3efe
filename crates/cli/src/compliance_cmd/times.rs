//! Times as the compliance commands take and show them: RFC 3339 flags,
//! milliseconds since the epoch (the core's clock), RFC 3339 for people.

use anyhow::Context;
use time::OffsetDateTime;

pub(super) fn parse_time(s: &str, flag: &str) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{flag} must be an RFC 3339 time (e.g. 2026-03-01T00:00:00Z)"))
}

pub(super) fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(super) fn ms_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| kms_protocol::date::format(&t))
        .unwrap_or_else(|_| format!("{ms} ms"))
}
