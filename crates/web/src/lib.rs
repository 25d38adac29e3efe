//! # web: the SDK's engine in the browser
//!
//! The web client runs the same Rust code as the native SDK for everything
//! that decides what is safe: opening events with every check a member's
//! client makes (key bound to the space's resource, sender, space, time
//! window, event binding, replays), sealing what a person sends, streaming
//! file encryption, and blinded search tokens. This crate is that code's
//! browser face: [`api`] is a plain Rust API over `client::engine` (strings
//! and bytes in, JSON and bytes out; no I/O, no clock), and on `wasm32` the
//! `bindings` module exports it to JavaScript with `wasm-bindgen`.
//!
//! The same API compiled natively runs the conformance suite of recorded
//! scenarios (`tests/scenarios.json`, `tests/conformance.rs`); the wasm build
//! runs the same file under Node (`tests/conformance.mjs`, `scripts/wasm`).
//!
//! Not here yet (issue 15): the KMS channel (handshake, dir messages,
//! signed 499 resets) and the key cache, which the browser still needs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
#[cfg(target_arch = "wasm32")]
mod bindings;
