//! Every load generator and benchmark of Custos, behind `custos … bench`.
//!
//! - [`kms`]: `custos kms bench [--seconds S] [--clients N] [--in-process-only]`:
//!   handshakes, key retrieval, creation and binding against a KMS engine,
//!   in-process (one core) and over HTTP, next to `openssl speed rsa2048`.
//! - [`core`]: `custos core bench [--clients N] [--spaces M] [--seconds S] [--rate R]`:
//!   a core on loopback with N WebSocket clients; messages accepted and
//!   delivered, send-to-deliver latency, CPU by thread role, the store alone.
//! - [`sdk`]: `custos sdk bench [--spaces N] [--rate R] [--seconds S]`: senders
//!   and live receivers through the SDK on an in-process `up` deployment;
//!   send-to-decrypted latency with warm key caches.
//! - [`search`]: `custos sdk search-bench [--messages N] [--queries Q]`:
//!   synthetic messages indexed as blinded tokens into the core's store;
//!   indexing throughput and query latency (run outside CI).
//! - [`common`]: what they share: the test token issuer the `kms` and `core`
//!   benches run on loopback.
//!
//! Each runs in one process on this machine (servers and load together), so
//! read the figures as what the machine does with both; `--database-url`
//! points `kms`, `core` and `search` at PostgreSQL instead of SQLite.

pub mod common;
pub mod core;
pub mod kms;
pub mod sdk;
pub mod search;
