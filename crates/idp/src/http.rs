//! HTTP: thin handlers that parse, call the engine ([`Idp`]) and map the result.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;

use crate::device::CodeProblem;
use crate::oauth::{ErrorCode, Form, OAuthError};
use crate::page::{self, Notice};
use crate::provider::{AuthorizeError, BasicAuth, Idp, PageError};
use crate::secret::Secret;

/// Largest request body accepted (forms are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub(crate) fn router(idp: Idp) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .route("/device_authorization", post(device_authorization))
        .route("/device", get(device_page).post(device_submit))
        .route("/authorize", get(authorize_page).post(authorize_submit))
        .layer(middleware::from_fn_with_state(idp.clone(), cors))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(idp)
}

/// Cross-origin reads for the web clients' origins only (their redirect
/// URIs'), on what a browser app calls: discovery, the key set and the token
/// endpoint. A form POST needs no preflight; one is answered all the same.
async fn cors(State(idp): State<Idp>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let for_apps = path == "/token" || path == "/jwks" || path.starts_with("/.well-known/");
    let origin = for_apps
        .then(|| request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()))
        .flatten()
        .filter(|o| idp.allows_origin(o))
        .map(str::to_owned);
    let mut response = if request.method() == axum::http::Method::OPTIONS && origin.is_some() {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        r
    } else {
        next.run(request).await
    };
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
    }
    if for_apps {
        response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// The parameters the sign-in form carries through, in order.
const AUTHORIZE_PARAMS: [&str; 8] =
    ["response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "state", "scope", "resource"];

fn login_page(form: &Form, username: &str, status: StatusCode, notice: Notice) -> Response {
    let hidden: Vec<(&str, &str)> =
        AUTHORIZE_PARAMS.iter().filter_map(|&n| form.get(n).ok().flatten().map(|v| (n, v))).collect();
    let redirect = form.get("redirect_uri").ok().flatten().unwrap_or_default();
    let app = url::Url::parse(redirect).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    let mut response = html(status, page::login(&hidden, &app, username, notice));
    // The form posts here and is then redirected to the app: CSP's
    // form-action covers that redirect too, so the app's origin is named.
    if let Ok(csp) = HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {app}; frame-ancestors 'none'"
    )) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(l) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, l);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        Err(_) => html(StatusCode::INTERNAL_SERVER_ERROR, page::refused("The sign-in could not be completed.")),
    }
}

fn authorize_error(idp: &Idp, form: &Form, e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(message) => html(StatusCode::BAD_REQUEST, page::refused(message)),
        AuthorizeError::Redirect { redirect_uri, error, description, state } => see_other(&idp.redirect(
            &redirect_uri,
            &[("error", error.as_str()), ("error_description", description)],
            state.as_deref(),
        )),
        AuthorizeError::Credentials(message) => {
            let username: String = form.get("username").ok().flatten().unwrap_or("").chars().take(256).collect();
            login_page(form, &username, StatusCode::UNAUTHORIZED, Notice::Error(message))
        }
    }
}

/// `GET /authorize`: the sign-in page, if the request is one this IdP serves.
async fn authorize_page(State(idp): State<Idp>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    if query.len() > MAX_BODY_BYTES {
        return html(StatusCode::URI_TOO_LONG, page::refused("The sign-in request is too long."));
    }
    let form = Form::parse(query.as_bytes());
    match idp.authorize_request(&form) {
        Ok(_) => login_page(&form, "", StatusCode::OK, Notice::None),
        Err(e) => authorize_error(&idp, &form, e),
    }
}

/// `POST /authorize`: the sign-in form; on success, back to the app with a code.
async fn authorize_submit(State(idp): State<Idp>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let form = match form_body(&headers, body) {
        Ok(f) => f,
        Err(e) => return html(e.status(), page::refused(e.message())),
    };
    match idp.authorize_submit(&form) {
        Ok(location) => see_other(&location),
        Err(e) => authorize_error(&idp, &form, e),
    }
}

async fn discovery(State(idp): State<Idp>) -> Json<serde_json::Value> {
    Json(idp.discovery())
}

async fn jwks(State(idp): State<Idp>) -> Json<serde_json::Value> {
    Json(idp.jwks())
}

/// Token responses and errors must not be cached (RFC 6749 section 5.1).
fn no_store(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn oauth_error(e: &OAuthError, status: Option<StatusCode>) -> Response {
    let status = status.unwrap_or_else(|| StatusCode::from_u16(e.code.http_status()).expect("valid status"));
    let mut response = (status, Json(e.to_json())).into_response();
    if e.code == ErrorCode::InvalidClient {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"custos-idp\""));
    }
    no_store(response)
}

/// Why a body is not a usable form.
enum BodyError {
    TooLarge,
    NotForm,
    Unreadable,
}

impl BodyError {
    fn message(&self) -> &'static str {
        match self {
            BodyError::TooLarge => "request body too large",
            BodyError::NotForm => "Content-Type must be application/x-www-form-urlencoded",
            BodyError::Unreadable => "request body could not be read",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::NotForm => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        }
    }

    fn to_oauth(&self) -> Response {
        oauth_error(&OAuthError::invalid_request(self.message()), Some(self.status()))
    }
}

fn form_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Form, BodyError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable
        }
    })?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(BodyError::NotForm);
    }
    Ok(Form::parse(&body))
}

/// `Authorization: Basic` client credentials (RFC 6749 section 2.3.1: id and
/// secret are form-urlencoded before base64). Any other scheme is refused.
fn basic_auth(headers: &HeaderMap) -> Result<Option<BasicAuth>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = || {
        OAuthError::new(ErrorCode::InvalidClient, "malformed Authorization header (expected Basic client credentials)")
    };
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = zeroize::Zeroizing::new(String::from_utf8(decoded).map_err(|_| bad())?);
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad())
    };
    let client_id = unescape(id)?;
    let secret = Secret::new(unescape(secret)?);
    if client_id.is_empty() {
        return Err(bad());
    }
    Ok(Some(BasicAuth { client_id, secret }))
}

async fn token(State(idp): State<Idp>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let form = match form_body(&headers, body) {
        Ok(f) => f,
        Err(e) => return e.to_oauth(),
    };
    let result = basic_auth(&headers).and_then(|basic| idp.token(&form, basic));
    match result {
        Ok(tokens) => no_store(Json(tokens).into_response()),
        Err(e) => oauth_error(&e, None),
    }
}

async fn device_authorization(
    State(idp): State<Idp>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = match form_body(&headers, body) {
        Ok(f) => f,
        Err(e) => return e.to_oauth(),
    };
    match basic_auth(&headers).and_then(|basic| idp.device_authorization(&form, basic)) {
        Ok(authorization) => no_store(Json(authorization).into_response()),
        Err(e) => oauth_error(&e, None),
    }
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The URL may carry the user code.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

#[derive(Deserialize)]
struct DevicePageQuery {
    user_code: Option<String>,
}

/// The page, with the code from `verification_uri_complete` filled in. It
/// does not say whether the code is valid (no oracle without credentials).
async fn device_page(query: Result<Query<DevicePageQuery>, QueryRejection>) -> Response {
    let code = query.ok().and_then(|Query(q)| q.user_code).unwrap_or_default();
    let code: String = code.chars().take(32).collect();
    html(StatusCode::OK, page::form(&code, "", Notice::None))
}

async fn device_submit(State(idp): State<Idp>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let form = match form_body(&headers, body) {
        Ok(f) => f,
        Err(e) => return html(e.status(), page::form("", "", Notice::Error(e.message()))),
    };
    // Written back into the form (escaped) so the user need not retype them; never the password.
    let echo = |name| form.get(name).ok().flatten().unwrap_or("").chars().take(256).collect::<String>();
    let (code, username) = (echo("user_code"), echo("username"));
    let approve = match form.get("action") {
        Ok(Some("approve")) => true,
        Ok(Some("deny")) => false,
        _ => {
            let notice = Notice::Error("Choose Approve or Deny.");
            return html(StatusCode::BAD_REQUEST, page::form(&code, &username, notice));
        }
    };
    match idp.device_decide(&form, approve) {
        Ok(user) => html(StatusCode::OK, page::done(approve, &user)),
        Err(e) => {
            let (status, message) = match e {
                PageError::Incomplete => (StatusCode::BAD_REQUEST, "Enter the code, your username and your password."),
                PageError::Code(CodeProblem::Unknown) => {
                    (StatusCode::BAD_REQUEST, "That code is not valid. Check the code your device shows.")
                }
                PageError::Code(CodeProblem::Expired) => {
                    (StatusCode::BAD_REQUEST, "That code has expired. Start the sign-in on your device again.")
                }
                PageError::Code(CodeProblem::Used) => {
                    (StatusCode::BAD_REQUEST, "That code has already been approved or denied.")
                }
                PageError::Credentials => (StatusCode::FORBIDDEN, "Wrong username or password. Nothing was approved."),
            };
            html(status, page::form(&code, &username, Notice::Error(message)))
        }
    }
}
