//! # kms-protocol: the Custos KMS wire protocol
//!
//! Typed payloads for every operation of the KMS draft (Application API and
//! administrative API) with the choices of `kms-protocol.md` ("Our choices
//! where the draft is open"): canonical `kms://` URIs ([`uri`]), domain-qualified
//! user ids ([`message::AuthId`]), RFC 3339 dates ([`date`]), status codes
//! ([`status`]), and both ends of the secure channel ([`channel`]): ECDHE to
//! the KMS static key, node-jose's `ECDH-HKDF`, `dir`/`A256GCM` messages and
//! signed 499 resets in their own signing context.
//!
//! This crate does no I/O: transports and the KMS engine live elsewhere.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod connect;
pub mod date;
mod error;
pub mod message;
pub mod policy;
pub mod pop;
pub mod status;
pub mod uri;

pub use channel::{
    begin_handshake, classify, open_request, open_session_request, seal_response, Incoming, KmsInfo, PendingHandshake,
    ServerKey, Session, SigningContext, Unreadable,
};
pub use error::ProtocolError;
pub use message::{
    AccessExplanation, AccessObject, AuthId, ClientInfo, Credential, KeyObject, Method, OpClass, Operation, Realm,
    Request, Response,
};
pub use status::Status;
pub use uri::{Kind, KmsUri, Target, UriError};
