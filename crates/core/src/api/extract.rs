//! What every handler needs from a request, as axum extractors that answer
//! a JSON [`ApiError`] saying only what is wrong: the caller
//! ([`Caller`], from `Authorization: Bearer`), a JSON body ([`JsonBody`]) and
//! a page of events ([`Page`]).
//!
//! None of them quotes what the client sent. Bodies hold ciphertext and
//! tokens, and serde's own messages quote values (`invalid type: string
//! "…"`), so those are rewritten to name the field and what it must be.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;
use crate::service::{Caller, Core};

/// The caller, authenticated by the engine from `Authorization: Bearer <token>`.
impl<S> FromRequestParts<S> for Caller
where
    Arc<Core>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        Arc::<Core>::from_ref(state).authenticate(token).await
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in either case
/// the SDKs send it).
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let Some(h) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthenticated("an Authorization: Bearer token is required"));
    };
    let h = h.to_str().map_err(|_| ApiError::unauthenticated("the Authorization header is not ASCII text"))?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be `Bearer <token>`"))?
        .trim();
    if token.is_empty() {
        return Err(ApiError::unauthenticated("the bearer token is empty"));
    }
    Ok(token)
}

/// A JSON request body of type `T`. The body's size limit is the route's
/// (`DefaultBodyLimit`); over it, 413 `too_large`. Anything that does not
/// parse as `T` is 400 `bad_json`. No content type is required.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("the request body is larger than this endpoint takes")
            } else {
                ApiError::bad("bad_body", "the request body could not be read")
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, or says what is wrong with it without quoting it.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let bad = |m: String| ApiError::bad("bad_json", m);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("the request body is empty; this endpoint takes a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let mut path: Vec<_> = e.path().iter().cloned().collect();
            let inner = e.into_inner();
            if !inner.is_data() {
                return Err(bad(not_json(&inner)));
            }
            let msg = inner.to_string();
            if msg.starts_with("unknown field ") {
                // The path ends with the unknown name, which is the client's text.
                path.pop();
            }
            return Err(bad(what_is_wrong(&dotted(&path), &msg)));
        }
    };
    de.end().map_err(|e| bad(not_json(&e)))?;
    Ok(value)
}

/// `items[3].tokens`, or `.` for the body itself.
fn dotted(path: &[serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push_str(if out.is_empty() { "?" } else { ".?" }),
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

fn not_json(e: &serde_json::Error) -> String {
    format!("the request body is not JSON (line {}, column {})", e.line(), e.column())
}

/// A message for a data error of serde at `path` (`.` for the body itself),
/// built from serde's message without the part that quotes the input: the
/// "expected …" part comes from our types, the rest may be the client's.
fn what_is_wrong(path: &str, serde_msg: &str) -> String {
    // serde_json appends " at line L column C".
    let msg = serde_msg.rsplit_once(" at line ").map_or(serde_msg, |(m, _)| m);
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_string);
    let expected = msg.split_once(", expected ").map(|(_, x)| x);
    let field = |name: &str| if path == "." { format!("`{name}`") } else { format!("`{path}.{name}`") };
    let here = if path == "." { "the request body".to_string() } else { format!("`{path}`") };
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return format!("{} is missing", field(&quoted(rest).unwrap_or_default()));
    }
    if let Some(rest) = msg.strip_prefix("duplicate field ") {
        return format!("{} is given twice", field(&quoted(rest).unwrap_or_default()));
    }
    if msg.starts_with("unknown field ") {
        // Not named: a field name the client made up is still the client's text.
        let at = if path == "." { String::new() } else { format!(" in `{path}`") };
        return match expected {
            Some(x) => format!("unknown field{at}: it takes {x}"),
            None => format!("unknown field{at}: it takes none"),
        };
    }
    if msg.starts_with("unknown variant ") {
        return match expected {
            Some(x) => format!("{here} must be {x}"),
            None => format!("{here} takes no value here"),
        };
    }
    if msg.starts_with("invalid type: ") || msg.starts_with("invalid value: ") || msg.starts_with("invalid length ") {
        let want = expected.map(plain).unwrap_or("something else");
        return format!("{here} must be {want}");
    }
    format!("{here} is not valid for this endpoint")
}

/// serde's name of what it expected, as a reader of JSON would say it.
fn plain(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a boolean" => "true or false",
        x if x.starts_with("struct ") => "a JSON object",
        x => x,
    }
}

/// A page of events: `?after=` (sync) or `?before=` (history), and `limit`.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Events with a greater sequence number (sync).
    pub after: Option<i64>,
    /// Events with a smaller sequence number, newest first (history).
    pub before: Option<i64>,
    /// Page size (clamped to 1 ..= the core's page limit).
    pub limit: Option<i64>,
}

impl Page {
    /// The limit as the engine takes it (which clamps it to its page size):
    /// any integer is accepted, none is an error.
    pub fn limit(&self) -> Option<u32> {
        self.limit.map(|l| l.clamp(1, i64::from(u32::MAX)) as u32)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // axum's own rejection is plain text that may quote the query.
        let Query(p) = Query::<Page>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad("bad_query", "after, before and limit must be integers"))?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{CreateSpace, PostEvent};

    fn msg<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        let e = parse::<T>(body.as_bytes()).unwrap_err();
        assert_eq!(e.code, "bad_json", "{body}");
        e.message
    }

    #[test]
    fn body_errors_name_the_field_and_never_quote_the_input() {
        let s = "SECRET-42";
        for (body, want) in [
            ("", "the request body is empty; this endpoint takes a JSON object"),
            ("{\"resource_uri\": \"SECRET-42", "the request body is not JSON (line 1, column 27)"),
            ("{\"resource_uri\": \"r\"} SECRET-42", "the request body is not JSON (line 1, column 23)"),
            ("\"SECRET-42\"", "the request body must be a JSON object"),
            ("{}", "`resource_uri` is missing"),
            ("{\"resource_uri\": 5}", "`resource_uri` must be a string"),
            ("{\"resource_uri\": \"r\", \"SECRET-42\": 1}", "unknown field: it takes `resource_uri` or `title`"),
            ("{\"resource_uri\": \"r\", \"title\": {\"ciphertext\": \"c\"}}", "`title.key_uri` is missing"),
            (
                "{\"resource_uri\": \"r\", \"title\": {\"ciphertext\": \"c\", \"key_uri\": \"k\", \"SECRET-42\": 1}}",
                "unknown field in `title`: it takes `ciphertext` or `key_uri`",
            ),
            ("{\"resource_uri\": \"r\", \"resource_uri\": \"SECRET-42\"}", "`resource_uri` is given twice"),
        ] {
            let m = msg::<CreateSpace>(body);
            assert_eq!(m, want, "{body}");
            assert!(!m.contains(s));
        }
        let m = msg::<PostEvent>("{\"kind\": \"SECRET-42\"}");
        assert!(m.starts_with("`kind` must be one of `message`, `edit`"), "{m}");
        let m = msg::<PostEvent>("{\"kind\": \"message\", \"client_event_id\": 5}");
        assert_eq!(m, "`client_event_id` must be a string");
    }
}
