//! Response status codes: HTTP semantics, plus the protocol's 499 reset.

use serde::{Deserialize, Serialize};

/// A KMS response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Status(pub u16);

impl Status {
    /// Success with a body.
    pub const OK: Status = Status(200);
    /// Object created.
    pub const CREATED: Status = Status(201);
    /// Success without a body.
    pub const NO_CONTENT: Status = Status(204);
    /// Malformed or invalid request.
    pub const BAD_REQUEST: Status = Status(400);
    /// Missing or invalid credential.
    pub const UNAUTHORIZED: Status = Status(401);
    /// Authenticated but not allowed.
    pub const FORBIDDEN: Status = Status(403);
    /// No such object.
    pub const NOT_FOUND: Status = Status(404);
    /// Conflicts with the object's state (e.g. key bound elsewhere).
    pub const CONFLICT: Status = Status(409);
    /// The request is too large.
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    /// Too many requests from this source.
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    /// The secure channel must be re-established.
    pub const RESET: Status = Status(499);
    /// The KMS failed.
    pub const INTERNAL_ERROR: Status = Status(500);
    /// The KMS is temporarily unable to serve.
    pub const UNAVAILABLE: Status = Status(503);

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// A short standard reason phrase.
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            409 => "Conflict",
            413 => "Payload Too Large",
            429 => "Too Many Requests",
            499 => "Reset",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}
