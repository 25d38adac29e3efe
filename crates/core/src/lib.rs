//! # custos_core: the messaging core
//!
//! What the cloud provider runs: an HTTP and WebSocket API over spaces,
//! ciphertext events and files, real-time delivery through an event bus, and
//! a relay for KMS messages it cannot read. It learns nothing of the content:
//! titles, messages, reactions and file metadata are compact JWEs under keys
//! only the org's KMS hands out, and file chunks are ciphertext.
//!
//! The engine, which knows no transport:
//!
//! - [`service`]: [`service::Core`], every operation with its membership and
//!   role checks; [`access`]: the roles it remembers; [`compliance`]:
//!   read-only access for an org's compliance readers; [`envelope`]: shape
//!   checks on ciphertext (JWE structure, key URI, size).
//! - [`fanout`]: real-time delivery on one node, frames serialized once for
//!   all its sockets; [`notices`]: the event bus's channels and what a
//!   notice on each means; [`webhooks`]: delivery to bots.
//!
//! The transports, which depend on the engine and never the other way:
//!
//! - [`state`]: what they share ([`state::AppState`]: the engine and the relay).
//! - [`api`]: the HTTP API, its extractors, answer types and OpenAPI document.
//! - [`ws`]: one WebSocket per client.
//! - [`relay`]: the KMS relay (direct HTTP, or links KMSes open), with
//!   per-caller budgets ([`limit`]).
//!
//! [`server`] puts them together from a [`config::Config`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod api;
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
