//! The channels on the event bus, in one place: who publishes on each, and
//! what a notice there means.
//!
//! A notice is a hint, never the truth: it carries a channel and a sequence
//! number, and whoever gets it reads the database. A lost notice only delays
//! something until the next one (or until a time-to-live runs out), so every
//! publisher logs a failure and goes on.
//!
//! | channel | published by | means |
//! |---|---|---|
//! | [`space_channel`] | every append | "the space has events up to `seq`" |
//! | [`receipts_channel`] | a read-marker move | "some read marker of the space moved" |
//! | [`user_channel`] | a join, a read-marker move | "this user joined a space, or moved a marker on another device" |
//! | [`MEMBERSHIP_CHANNEL`] | a membership change | "forget the roles you remember" ([`crate::access`]) |
//!
//! User ids do not travel on the bus: the user channel is named by a hash.

/// The channel of membership changes: every node forgets the roles it
/// remembers (a notice cannot say which space without putting ids on the bus).
pub const MEMBERSHIP_CHANNEL: &str = "core-membership";

/// A space's events channel: its id.
pub fn space_channel(space_id: &str) -> &str {
    space_id
}

/// A space's read-receipts channel.
pub fn receipts_channel(space_id: &str) -> String {
    format!("r-{space_id}")
}

/// A user's channel: spaces they joined, markers they moved elsewhere.
pub fn user_channel(user_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user_id.as_bytes());
    format!("u-{}", d.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_do_not_collide_and_hide_user_ids() {
        let u = user_channel("alice@acme.example");
        assert!(u.starts_with("u-") && u.len() == 34 && !u.contains("alice"), "{u}");
        // Space ids are UUIDs (hex and dashes): none starts like another channel.
        let s = "8f0c2b9e-0000-4000-8000-000000000000";
        assert_ne!(space_channel(s), receipts_channel(s));
        assert_ne!(space_channel(s), MEMBERSHIP_CHANNEL);
    }
}
