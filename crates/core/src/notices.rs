//! The channels of the bus (`core-bus`) the core's nodes tell each other on.
//! A notice says only "something changed here" (a channel and a sequence
//! number): the database stays the truth, and what changed is read from it.

/// A node says "some membership changed": every node forgets the roles it
/// remembers (see [`crate::access`]).
pub const MEMBERSHIP_CHANNEL: &str = "core-membership";

/// A user's channel: a space the user joins. A hash, so that user ids do not
/// travel on the bus.
pub fn user_channel(user_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user_id.as_bytes());
    format!("u-{}", d.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect::<String>())
}

/// A space's read receipts: some member's read marker moved.
pub fn receipts_channel(space_id: &str) -> String {
    format!("r-{space_id}")
}
