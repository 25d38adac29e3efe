//! # custos_core: the messaging core
//!
//! What the cloud provider runs: an HTTP and WebSocket API over spaces,
//! ciphertext events and files, real-time delivery through an event bus, and
//! a relay for KMS messages it cannot read. It learns nothing of the content:
//! titles, messages, reactions and file metadata are compact JWEs under keys
//! only the org's KMS hands out, and file chunks are ciphertext.
//!
//! - [`service`]: the engine (no HTTP), with every membership and role check;
//!   [`access`]: the roles it remembers.
//! - [`api`], [`ws`], [`relay`]: the transports; [`fanout`]: real-time
//!   delivery on one node, frames serialized once for all its sockets.
//! - [`envelope`]: shape checks on ciphertext (JWE structure, key URI, size).
//! - [`compliance`]: read-only access for an org's compliance readers.
//! - [`limit`]: per-caller budgets on the KMS relay.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod api;
pub mod bench;
pub mod compliance;
pub mod config;
pub mod envelope;
pub mod error;
pub mod fanout;
pub mod limit;
pub mod notices;
pub mod relay;
pub mod server;
pub mod service;
pub mod state;
pub mod webhooks;
pub mod ws;
