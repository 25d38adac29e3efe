//! RFC 3339 dates, written in UTC with millisecond precision (as JavaScript's
//! `Date.prototype.toISOString` does, so node-kms reads them back exactly).

use serde::{Deserialize, Deserializer, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time on the wire.
pub type Date = OffsetDateTime;

/// Now, truncated to whole milliseconds.
pub fn now() -> Date {
    truncate(OffsetDateTime::now_utc())
}

/// Truncates to whole milliseconds, in UTC.
pub fn truncate(d: Date) -> Date {
    let d = d.to_offset(time::UtcOffset::UTC);
    d.replace_nanosecond(d.nanosecond() / 1_000_000 * 1_000_000).expect("valid nanosecond")
}

/// Formats as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(d: &Date) -> String {
    let d = truncate(*d);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.millisecond()
    )
}

/// Parses any RFC 3339 date-time.
pub fn parse(s: &str) -> Result<Date, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

/// Serde adapter for `Date` fields.
pub mod rfc3339 {
    use super::*;

    /// Serializes.
    pub fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }
    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(|_| serde::de::Error::custom("not an RFC 3339 date-time"))
    }

    /// Serde adapter for `Option<Date>` fields.
    pub mod option {
        use super::*;

        /// Serializes.
        pub fn serialize<S: Serializer>(d: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&format(d)),
                None => s.serialize_none(),
            }
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
            let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            s.map(|s| parse(&s).map_err(|_| serde::de::Error::custom("not an RFC 3339 date-time"))).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_iso_strings_round_trip() {
        let d = parse("2026-11-27T08:15:30.123Z").unwrap();
        assert_eq!(format(&d), "2026-11-27T08:15:30.123Z");
        let d = parse("2026-11-27T10:15:30+02:00").unwrap();
        assert_eq!(format(&d), "2026-11-27T08:15:30.000Z");
        assert!(parse("2026-11-27 08:15:30").is_err());
        assert!(parse("yesterday").is_err());
    }
}
