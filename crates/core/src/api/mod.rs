//! The HTTP API: handlers that take the caller and a parsed request from
//! their extractors ([`extract`]), call the engine ([`Core`]), and answer a
//! typed body ([`wire`]). Described as OpenAPI 3.1 at `/openapi.json`
//! ([`ApiDoc`]); `tests/openapi.rs` checks real answers against it.
//!
//! Errors are [`ErrorBody`] JSON, `{"error": <stable code>, "message": …}`,
//! for every status the core itself decides; the OpenAPI document lists them
//! as each operation's `default` response, and by status where it matters.

pub mod extract;
pub mod wire;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::handler::Handler as _;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::error::{ApiError, ErrorBody};
use crate::relay::Relay;
use crate::service::{AddMember, Caller, Core, CreateFile, CreateSpace, PostEvent, Sealed};
use crate::state::AppState;
use extract::{JsonBody, Page};

/// The OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custos core",
        description = "Spaces, ciphertext messages and files, real-time delivery and the KMS relay. The core never sees plaintext: every `ciphertext` is a compact JWE under a key of the space's KMS. Times are Unix milliseconds."
    ),
    modifiers(&BearerAndErrors),
    security(("bearer" = [])),
    paths(
        openapi,
        healthz,
        me,
        create_space,
        list_spaces,
        get_space,
        add_member,
        remove_member,
        post_event,
        list_events,
        set_read_marker,
        create_file,
        put_chunk,
        list_chunks,
        complete_file,
        get_chunk,
        get_file,
        compliance_space,
        compliance_events,
        compliance_file,
        compliance_chunk,
        put_preview,
        get_preview,
        index_event,
        index_events,
        search,
        search_keys,
        put_webhook,
        get_webhook,
        delete_webhook,
        relay,
        crate::relay::connect,
        crate::ws::upgrade
    ),
    components(schemas(
        ErrorBody,
        CreateSpace,
        PostEvent,
        AddMember,
        CreateFile,
        Sealed,
        SetReadMarker,
        SetWebhook,
        crate::service::IndexEvent,
        crate::service::IndexEvents,
        crate::service::IndexItem,
        crate::service::KeyQuery,
        crate::service::SearchRequest
    ))
)]
pub struct ApiDoc;

/// Declares the bearer scheme, and gives every operation a `default`
/// response: any status not listed answers an [`ErrorBody`]. (The WebSocket
/// upgrades are left alone: a request that is not one gets axum's plain text.)
struct BearerAndErrors;

impl utoipa::Modify for BearerAndErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::content::ContentBuilder;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{Ref, ResponseBuilder};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        let error = ResponseBuilder::new()
            .description("An error: `error` is a stable code, `message` says what was wrong")
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                if !op.responses.responses.contains_key("101") {
                    op.responses.responses.entry("default".into()).or_insert_with(|| error.clone().into());
                }
            }
        }
    }
}

/// The router and, from the same lines, the `(method, path)` pairs it
/// serves: `tests/openapi.rs` checks each against the OpenAPI document, so a
/// route cannot be added without being described.
macro_rules! routes {
    ($( $path:literal => $first:ident($h:expr) $(. $more:ident($hm:expr))* ),* $(,)?) => {
        (
            Router::new() $( .route($path, axum::routing::$first($h) $(.$more($hm))*) )*,
            &[ $( (stringify!($first), $path) $(, (stringify!($more), $path))* ),* ]
        )
    };
}

/// Largest relayed KMS body: a batch may be larger than a file chunk.
const MAX_RELAY_BODY: usize = kms_protocol::channel::MAX_MESSAGE_LEN * 16;

type Table = (Router<AppState>, &'static [(&'static str, &'static str)]);

/// Every route, with the body limits of those that take more (or less) than
/// the router's default (a file chunk).
fn table(max_event_body: usize) -> Table {
    routes! {
        "/openapi.json" => get(openapi),
        "/healthz" => get(healthz),
        "/v1/me" => get(me),
        "/v1/spaces" => post(create_space).get(list_spaces),
        "/v1/spaces/{id}" => get(get_space),
        "/v1/spaces/{id}/members" => post(add_member),
        "/v1/spaces/{id}/members/{user}" => delete(remove_member),
        // The event is ciphertext and a few ids; refused before parsing when larger.
        "/v1/spaces/{id}/events" => post(post_event.layer(DefaultBodyLimit::max(max_event_body))).get(list_events),
        "/v1/spaces/{id}/read-marker" => put(set_read_marker),
        "/v1/webhook" => put(put_webhook).get(get_webhook).delete(delete_webhook),
        "/v1/spaces/{id}/events/{event}/index" => put(index_event),
        "/v1/spaces/{id}/index" => post(index_events),
        "/v1/files/{id}/preview" => put(put_preview).get(get_preview),
        "/v1/spaces/{id}/search" => post(search),
        "/v1/spaces/{id}/search/keys" => get(search_keys),
        "/v1/spaces/{id}/files" => post(create_file),
        "/v1/files/{id}" => get(get_file),
        "/v1/files/{id}/chunks" => get(list_chunks),
        "/v1/files/{id}/chunks/{index}" => put(put_chunk).get(get_chunk),
        "/v1/files/{id}/complete" => post(complete_file),
        // Compliance readers: read only (GET), never the member routes.
        "/v1/compliance/spaces/{id}" => get(compliance_space),
        "/v1/compliance/spaces/{id}/events" => get(compliance_events),
        "/v1/compliance/files/{id}" => get(compliance_file),
        "/v1/compliance/files/{id}/chunks/{index}" => get(compliance_chunk),
        "/kms/{domain}/messages" => post(relay.layer(DefaultBodyLimit::max(MAX_RELAY_BODY))),
        "/kms/connect" => get(crate::relay::connect),
        "/v1/ws" => get(crate::ws::upgrade),
    }
}

/// The router over the engine and the relay.
pub fn router(state: AppState) -> Router {
    let l = &state.core.cfg.limits;
    let (routes, _) = table(l.max_ciphertext_bytes + 4096);
    let cors = cors(&state.core.cfg.web_origins());
    routes.layer(DefaultBodyLimit::max(l.max_chunk_bytes as usize + 64 * 1024)).layer(cors).with_state(state)
}

/// Cross-origin calls from the orgs' web clients only. Tokens travel in the
/// `Authorization` header, never in cookies, so no credentials mode.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH])
        .expose_headers([header::RETRY_AFTER, header::ETAG])
        .max_age(std::time::Duration::from_secs(600))
}

/// Every `(method, path)` the router serves (methods in lower case, paths as
/// in the OpenAPI document).
pub fn served() -> &'static [(&'static str, &'static str)] {
    table(0).1
}

#[utoipa::path(get, path = "/openapi.json", security(()), responses((status = 200, description = "This document", content_type = "application/json")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = wire::Health, description = "The core serves")))]
async fn healthz() -> Json<wire::Health> {
    Json(wire::Health { status: "ok" })
}

#[utoipa::path(get, path = "/v1/me", responses((status = 200, body = wire::Me, description = "Who the token says you are"), (status = 401, body = ErrorBody)))]
async fn me(State(core): State<Arc<Core>>, c: Caller) -> Json<wire::Me> {
    let org = core.cfg.org_of(&c.user_id).map(|o| wire::MyOrg { domain: o.domain.clone(), kms_uri: o.kms_uri.clone() });
    Json(wire::Me { user_id: c.user_id, org })
}

#[utoipa::path(post, path = "/v1/spaces", request_body = CreateSpace, responses((status = 201, body = wire::Space, description = "The space; you are its moderator"), (status = 400, body = ErrorBody)))]
async fn create_space(
    State(core): State<Arc<Core>>,
    c: Caller,
    JsonBody(req): JsonBody<CreateSpace>,
) -> Result<(StatusCode, Json<wire::Space>), ApiError> {
    let s = core.create_space(&c, req).await?;
    Ok((StatusCode::CREATED, Json(s.into())))
}

#[utoipa::path(get, path = "/v1/spaces", responses((status = 200, body = wire::Spaces, description = "Your spaces, most recently active first")))]
async fn list_spaces(State(core): State<Arc<Core>>, c: Caller) -> Result<Json<wire::Spaces>, ApiError> {
    let spaces = core.spaces(&c).await?;
    Ok(Json(wire::Spaces { spaces: spaces.into_iter().map(Into::into).collect() }))
}

#[utoipa::path(get, path = "/v1/spaces/{id}", params(("id" = String, Path)), responses((status = 200, body = wire::SpaceDetail, description = "The space, your role, its members, and their read markers"), (status = 404, body = ErrorBody)))]
async fn get_space(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::SpaceDetail>, ApiError> {
    Ok(Json(core.space(&c, &id).await?.into()))
}

#[utoipa::path(post, path = "/v1/spaces/{id}/members", params(("id" = String, Path)), request_body = AddMember, responses((status = 200, body = wire::AddedMember, description = "The membership event (null if nothing changed)"), (status = 403, body = ErrorBody)))]
async fn add_member(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    JsonBody(req): JsonBody<AddMember>,
) -> Result<Json<wire::AddedMember>, ApiError> {
    let e = core.add_member(&c, &id, req).await?;
    Ok(Json(wire::AddedMember { event: e.map(Into::into) }))
}

#[utoipa::path(delete, path = "/v1/spaces/{id}/members/{user}", params(("id" = String, Path), ("user" = String, Path)), responses((status = 200, body = wire::RemovedMember, description = "The membership event"), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(core): State<Arc<Core>>,
    Path((id, user)): Path<(String, String)>,
    c: Caller,
) -> Result<Json<wire::RemovedMember>, ApiError> {
    let e = core.remove_member(&c, &id, &user).await?;
    Ok(Json(wire::RemovedMember { event: e.into() }))
}

#[utoipa::path(post, path = "/v1/spaces/{id}/events", params(("id" = String, Path)), request_body = PostEvent, responses((status = 201, body = wire::Event, description = "Stored"), (status = 200, body = wire::Event, description = "A retry of an earlier post: the first event"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn post_event(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    JsonBody(req): JsonBody<PostEvent>,
) -> Result<(StatusCode, Json<wire::Event>), ApiError> {
    let (e, new) = core.post(&c, &id, req).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(e.into())))
}

#[utoipa::path(get, path = "/v1/spaces/{id}/events", params(("id" = String, Path), Page), responses((status = 200, body = wire::Events, description = "A page of events")))]
async fn list_events(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    page: Page,
) -> Result<Json<wire::Events>, ApiError> {
    Ok(Json(core.events(&c, &id, page.after, page.before, page.limit()).await?.into()))
}

/// `PUT /v1/spaces/{id}/read-marker`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetReadMarker {
    /// The last sequence number read.
    pub seq: i64,
}

#[utoipa::path(put, path = "/v1/spaces/{id}/read-marker", params(("id" = String, Path)), request_body = SetReadMarker, description = "Moves your read marker forward. Your other sockets, and as a read receipt the sockets of the space's other members, get `{\"type\":\"read_marker\",\"space\":…,\"user\":…,\"seq\":…}` on `/v1/ws` once they have sent the event it points at. Receipts are not events: no sequence number, not in the history.", responses((status = 200, body = wire::MarkerInForce, description = "The marker in force (it never moves back)")))]
async fn set_read_marker(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    JsonBody(m): JsonBody<SetReadMarker>,
) -> Result<Json<wire::MarkerInForce>, ApiError> {
    Ok(Json(wire::MarkerInForce { seq: core.read_marker(&c, &id, m.seq).await? }))
}

#[utoipa::path(put, path = "/v1/files/{id}/preview", params(("id" = String, Path)), request_body = Sealed, description = "Stores a file's preview (thumbnail or excerpt), sealed under a key of the file's space; by the org's preview services only. Replaces an earlier one.", responses((status = 204, description = "Stored"), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn put_preview(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    JsonBody(sealed): JsonBody<Sealed>,
) -> Result<StatusCode, ApiError> {
    core.put_preview(&c, &id, sealed).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/files/{id}/preview", params(("id" = String, Path)), responses((status = 200, body = wire::Preview, description = "The file's sealed preview"), (status = 404, body = ErrorBody)))]
async fn get_preview(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::Preview>, ApiError> {
    Ok(Json(core.preview(&c, &id).await?.into()))
}

#[utoipa::path(put, path = "/v1/spaces/{id}/events/{event}/index", params(("id" = String, Path), ("event" = String, Path)), request_body = crate::service::IndexEvent, description = "Stores a message's blinded search tokens (keyed hashes under a search key derived from the space's content key: the core cannot invert them). By the message's sender, or by one of the org's search indexers (re-indexing under a newer key). Replaces earlier tokens of that message.", responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn index_event(
    State(core): State<Arc<Core>>,
    Path((id, event)): Path<(String, String)>,
    c: Caller,
    JsonBody(req): JsonBody<crate::service::IndexEvent>,
) -> Result<StatusCode, ApiError> {
    core.index_event(&c, &id, &event, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/spaces/{id}/index", params(("id" = String, Path)), request_body = crate::service::IndexEvents, description = "Stores the blinded search tokens of 1 to 200 messages in one transaction (a backfill or a re-index after rotation). Each item is checked as `PUT /v1/spaces/{id}/events/{event}/index` checks one; if any is refused, nothing is stored and the message names the item (`items[i]: ...`).", responses((status = 200, body = wire::Indexed, description = "How many messages"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn index_events(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    JsonBody(req): JsonBody<crate::service::IndexEvents>,
) -> Result<Json<wire::Indexed>, ApiError> {
    Ok(Json(wire::Indexed { indexed: core.index_events(&c, &id, req).await? }))
}

#[utoipa::path(post, path = "/v1/spaces/{id}/search", params(("id" = String, Path)), request_body = crate::service::SearchRequest, description = "The events whose tokens hold every token of one of the queries (one per key version), newest first. Candidates only: clients decrypt and rank them, and drop any that do not match.", responses((status = 200, body = wire::Events, description = "The candidates"), (status = 400, body = ErrorBody)))]
async fn search(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    JsonBody(req): JsonBody<crate::service::SearchRequest>,
) -> Result<Json<wire::Events>, ApiError> {
    Ok(Json(core.search(&c, &id, req).await?.into()))
}

#[utoipa::path(get, path = "/v1/spaces/{id}/search/keys", params(("id" = String, Path)), responses((status = 200, body = wire::SearchKeys, description = "The key versions the space's tokens are under")))]
async fn search_keys(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::SearchKeys>, ApiError> {
    let keys = core.search_keys(&c, &id).await?;
    Ok(Json(wire::SearchKeys {
        keys: keys.into_iter().map(|(key_uri, events)| wire::SearchKey { key_uri, events }).collect(),
    }))
}

/// `PUT /v1/webhook`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// Where to POST your spaces' events (`https://…`).
    pub url: String,
}

#[utoipa::path(put, path = "/v1/webhook", request_body = SetWebhook, description = "Registers where the core POSTs every event of your spaces (bots). The answer's `secret` (shown only here; registering again rotates it) verifies each request: `X-Custos-Signature: v1=<hex HMAC-SHA256(secret, \"v1:\" + X-Custos-Request-Timestamp + \":\" + body)>`. Body: `{\"type\":\"event\",\"event\":{…}}` as on `/v1/ws`. Retried with backoff until a 2xx answer, in order per space, at least once (dedupe by `X-Custos-Event-Id`).", responses((status = 200, body = wire::WebhookRegistered, description = "Registered, with its signing secret"), (status = 400, body = ErrorBody)))]
async fn put_webhook(
    State(core): State<Arc<Core>>,
    c: Caller,
    JsonBody(b): JsonBody<SetWebhook>,
) -> Result<Json<wire::WebhookRegistered>, ApiError> {
    let (w, secret) = core.set_webhook(&c, &b.url).await?;
    Ok(Json(wire::WebhookRegistered { url: w.url, created: w.create_date, secret }))
}

#[utoipa::path(get, path = "/v1/webhook", responses((status = 200, body = wire::Webhook, description = "Your webhook (never the secret)"), (status = 404, body = ErrorBody)))]
async fn get_webhook(State(core): State<Arc<Core>>, c: Caller) -> Result<Json<wire::Webhook>, ApiError> {
    let w = core.webhook(&c).await?;
    Ok(Json(wire::Webhook { url: w.url, created: w.create_date }))
}

#[utoipa::path(delete, path = "/v1/webhook", responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)))]
async fn delete_webhook(State(core): State<Arc<Core>>, c: Caller) -> Result<StatusCode, ApiError> {
    core.delete_webhook(&c).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/spaces/{id}/files", params(("id" = String, Path)), request_body = CreateFile, responses((status = 201, body = wire::FileRecord, description = "The upload"), (status = 413, body = ErrorBody)))]
async fn create_file(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    JsonBody(req): JsonBody<CreateFile>,
) -> Result<(StatusCode, Json<wire::FileRecord>), ApiError> {
    let f = core.create_file(&c, &id, req).await?;
    Ok((StatusCode::CREATED, Json(f.into())))
}

#[utoipa::path(get, path = "/v1/files/{id}", params(("id" = String, Path)), responses((status = 200, body = wire::FileRecord, description = "The file's record (encrypted metadata)")))]
async fn get_file(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::FileRecord>, ApiError> {
    let (f, _) = core.chunks(&c, &id).await?;
    Ok(Json(f.into()))
}

#[utoipa::path(put, path = "/v1/files/{id}/chunks/{index}", params(("id" = String, Path), ("index" = i64, Path)), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody)))]
async fn put_chunk(
    State(core): State<Arc<Core>>,
    Path((id, index)): Path<(String, String)>,
    c: Caller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let index: i64 =
        index.parse().map_err(|_| ApiError::bad("bad_chunk_index", "the chunk index must be an integer"))?;
    core.put_chunk(&c, &id, index, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/files/{id}/chunks", params(("id" = String, Path)), responses((status = 200, body = wire::Chunks, description = "The chunk indexes stored so far (to resume an upload)")))]
async fn list_chunks(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::Chunks>, ApiError> {
    let (f, stored) = core.chunks(&c, &id).await?;
    Ok(Json(wire::Chunks { chunk_count: f.chunk_count(), file: f.id, stored }))
}

#[utoipa::path(post, path = "/v1/files/{id}/complete", params(("id" = String, Path)), responses((status = 200, body = wire::Event, description = "The file-ready event"), (status = 409, body = ErrorBody)))]
async fn complete_file(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::Event>, ApiError> {
    Ok(Json(core.complete_file(&c, &id).await?.into()))
}

/// A chunk's ciphertext, as it was uploaded.
fn octets(b: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
}

#[utoipa::path(get, path = "/v1/files/{id}/chunks/{index}", params(("id" = String, Path), ("index" = i64, Path)), responses((status = 200, description = "The chunk's ciphertext", content_type = "application/octet-stream")))]
async fn get_chunk(
    State(core): State<Arc<Core>>,
    Path((id, index)): Path<(String, String)>,
    c: Caller,
) -> Result<Response, ApiError> {
    let index: i64 = index.parse().map_err(|_| ApiError::not_found("chunk"))?;
    Ok(octets(core.get_chunk(&c, &id, index).await?))
}

#[utoipa::path(get, path = "/v1/compliance/spaces/{id}", tag = "compliance", params(("id" = String, Path)), description = "For the org's compliance readers (`compliance_readers` in the core's config): a space that has or had a member of the reader's org, its current members and its former members. Read only; logged. Anyone else, and any other space, gets 404 `not_found` as for a space that does not exist.", responses((status = 200, body = wire::ComplianceSpace), (status = 404, body = ErrorBody)))]
async fn compliance_space(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::ComplianceSpace>, ApiError> {
    Ok(Json(core.compliance_space(&c, &id).await?.into()))
}

#[utoipa::path(get, path = "/v1/compliance/spaces/{id}/events", tag = "compliance", params(("id" = String, Path), Page), description = "For compliance readers: a page of the space's events (ciphertext), paged as `GET /v1/spaces/{id}/events`. Read only; logged.", responses((status = 200, body = wire::Events, description = "A page of events"), (status = 404, body = ErrorBody)))]
async fn compliance_events(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
    page: Page,
) -> Result<Json<wire::Events>, ApiError> {
    Ok(Json(core.compliance_events(&c, &id, page.after, page.before, page.limit()).await?.into()))
}

#[utoipa::path(get, path = "/v1/compliance/files/{id}", tag = "compliance", params(("id" = String, Path)), description = "For compliance readers: a file's record (sealed metadata) in a space they may read. Read only; logged.", responses((status = 200, body = wire::FileRecord, description = "The file's record"), (status = 404, body = ErrorBody)))]
async fn compliance_file(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    c: Caller,
) -> Result<Json<wire::FileRecord>, ApiError> {
    Ok(Json(core.compliance_file(&c, &id).await?.into()))
}

#[utoipa::path(get, path = "/v1/compliance/files/{id}/chunks/{index}", tag = "compliance", params(("id" = String, Path), ("index" = i64, Path)), description = "For compliance readers: one chunk of a ready file (ciphertext). Read only; logged.", responses((status = 200, description = "The chunk's ciphertext", content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
async fn compliance_chunk(
    State(core): State<Arc<Core>>,
    Path((id, index)): Path<(String, String)>,
    c: Caller,
) -> Result<Response, ApiError> {
    let index: i64 = index.parse().map_err(|_| ApiError::not_found("chunk"))?;
    Ok(octets(core.compliance_chunk(&c, &id, index).await?))
}

#[utoipa::path(post, path = "/kms/{domain}/messages", params(("domain" = String, Path, description = "The KMS domain")), request_body(content = String, content_type = "application/jose"), description = "Relays a compact KMS message (`application/jose`) or a `{\"kmsMessages\": [...]}` batch (`application/json`) to the caller's own org's KMS. Per caller, at most `relay_burst` messages at once and `relay_per_second` sustained (a batch counts as its number of messages). The KMS's own answers, errors included, pass through with its status and content type.", responses((status = 200, description = "The KMS's answer, unread", content_type = "application/jose"), (status = 403, body = ErrorBody, description = "`kms_not_your_org`: that KMS does not serve the caller's org (other orgs reach it through their own KMS, by federation)"), (status = 404, body = ErrorBody, description = "No such KMS"), (status = 413, body = ErrorBody, description = "Too large, or `relay_batch_too_large`: more messages than `relay_burst`"), (status = 429, body = ErrorBody, description = "`relay_throttled`: over the caller's relay limit; `Retry-After` says when to retry (the KMS's own 429, passed through, has none)"), (status = 502, body = ErrorBody, description = "The KMS is unreachable")))]
async fn relay(
    State(core): State<Arc<Core>>,
    State(relay): State<Arc<Relay>>,
    Path(domain): Path<String>,
    c: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/jose");
    let (status, ctype, answer) = crate::relay::forward(&relay, &core.cfg, &c, &domain, ctype, body).await?;
    Ok((status, [(header::CONTENT_TYPE, ctype)], answer).into_response())
}
