//! The HTTP API: thin handlers that authenticate, parse, call [`Core`], and
//! map the result. Described as OpenAPI at `/openapi.json`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::OpenApi;

use crate::error::{ApiError, ErrorBody};
use crate::relay::Links;
use crate::service::{AddMember, Caller, Core, CreateFile, CreateSpace, PostEvent, Sealed};
use crate::state::AppState;

/// The OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custos core",
        description = "Spaces, ciphertext messages and files, real-time delivery and the KMS relay. The core never sees plaintext: every `ciphertext` is a compact JWE under a key of the space's KMS."
    ),
    paths(
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
        relay
    ),
    components(schemas(
        ErrorBody,
        CreateSpace,
        PostEvent,
        AddMember,
        CreateFile,
        Sealed,
        ReadMarker,
        SetWebhook,
        crate::service::IndexEvent,
        crate::service::IndexEvents,
        crate::service::IndexItem,
        crate::service::KeyQuery,
        crate::service::SearchRequest,
        crate::compliance::ComplianceSpace
    ))
)]
pub struct ApiDoc;

/// The router, over the service and the KMS links ([`AppState`]).
pub fn router(state: AppState) -> Router {
    let max_chunk = state.core.cfg.limits.max_chunk_bytes as usize;
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/me", get(me))
        .route("/v1/spaces", post(create_space).get(list_spaces))
        .route("/v1/spaces/{id}", get(get_space))
        .route("/v1/spaces/{id}/members", post(add_member))
        .route("/v1/spaces/{id}/members/{user}", delete(remove_member))
        .route("/v1/spaces/{id}/events", post(post_event).get(list_events))
        .route("/v1/spaces/{id}/read-marker", put(set_read_marker))
        .route("/v1/webhook", put(put_webhook).get(get_webhook).delete(delete_webhook))
        .route("/v1/spaces/{id}/events/{event}/index", put(index_event))
        .route("/v1/spaces/{id}/index", post(index_events))
        .route("/v1/files/{id}/preview", put(put_preview).get(get_preview))
        .route("/v1/spaces/{id}/search", post(search))
        .route("/v1/spaces/{id}/search/keys", get(search_keys))
        .route("/v1/spaces/{id}/files", post(create_file))
        .route("/v1/files/{id}", get(get_file))
        .route("/v1/files/{id}/chunks", get(list_chunks))
        .route("/v1/files/{id}/chunks/{index}", put(put_chunk).get(get_chunk))
        .route("/v1/files/{id}/complete", post(complete_file))
        // Compliance readers: read only (GET), never the member routes.
        .route("/v1/compliance/spaces/{id}", get(compliance_space))
        .route("/v1/compliance/spaces/{id}/events", get(compliance_events))
        .route("/v1/compliance/files/{id}", get(compliance_file))
        .route("/v1/compliance/files/{id}/chunks/{index}", get(compliance_chunk))
        // KMS batches may be larger than a file chunk: the relay has its own limit.
        .route(
            "/kms/{domain}/messages",
            post(relay).layer(DefaultBodyLimit::max(kms_protocol::channel::MAX_MESSAGE_LEN * 16)),
        )
        .route("/kms/connect", get(crate::relay::connect))
        .route("/v1/ws", get(crate::ws::upgrade))
        .layer(DefaultBodyLimit::max(max_chunk + 64 * 1024))
        .with_state(state)
}

/// Reads `Authorization: Bearer …` and authenticates it.
pub async fn caller(core: &Core, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let h = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthenticated("an Authorization: Bearer token is required"))?;
    core.authenticate(token.trim()).await
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's message may quote input; keep only its position.
        ApiError::bad(
            "bad_json",
            format!("the request body is not valid for this endpoint (line {}, column {})", e.line(), e.column()),
        )
    })
}

#[utoipa::path(get, path = "/v1/me", responses((status = 200, description = "Who the token says you are"), (status = 401, body = ErrorBody)))]
async fn me(State(core): State<Arc<Core>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let org = core.cfg.org_of(&c.user_id).map(|o| json!({"domain": o.domain, "kms_uri": o.kms_uri}));
    Ok(Json(json!({"user_id": c.user_id, "org": org})).into_response())
}

#[utoipa::path(post, path = "/v1/spaces", request_body = CreateSpace, responses((status = 201, description = "The space"), (status = 400, body = ErrorBody)))]
async fn create_space(State(core): State<Arc<Core>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let s = core.create_space(&c, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[utoipa::path(get, path = "/v1/spaces", responses((status = 200, description = "Your spaces, most recently active first")))]
async fn list_spaces(State(core): State<Arc<Core>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    Ok(Json(json!({"spaces": core.spaces(&c).await?})).into_response())
}

#[utoipa::path(get, path = "/v1/spaces/{id}", params(("id" = String, Path)), responses((status = 200, description = "The space, your role, its members, and their read markers (`read_markers`: `[{user_id, seq}]`, members who set one)"), (status = 404, body = ErrorBody)))]
async fn get_space(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let (s, role, members, read_markers) = core.space(&c, &id).await?;
    Ok(Json(json!({"space": s, "role": role, "members": members, "read_markers": read_markers})).into_response())
}

#[utoipa::path(post, path = "/v1/spaces/{id}/members", params(("id" = String, Path)), request_body = AddMember, responses((status = 200, description = "The membership event (null if nothing changed)"), (status = 403, body = ErrorBody)))]
async fn add_member(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let e = core.add_member(&c, &id, json_body(&body)?).await?;
    Ok(Json(json!({"event": e})).into_response())
}

#[utoipa::path(delete, path = "/v1/spaces/{id}/members/{user}", params(("id" = String, Path), ("user" = String, Path)), responses((status = 200, description = "The membership event"), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let e = core.remove_member(&c, &id, &user).await?;
    Ok(Json(json!({"event": e})).into_response())
}

#[utoipa::path(post, path = "/v1/spaces/{id}/events", params(("id" = String, Path)), request_body = PostEvent, responses((status = 201, description = "Stored"), (status = 200, description = "A retry of an earlier post: the first event"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn post_event(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    if body.len() > core.cfg.limits.max_ciphertext_bytes + 4096 {
        return Err(ApiError::too_large("the event is too large"));
    }
    let (e, new) = core.post(&c, &id, json_body::<PostEvent>(&body)?).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(e)).into_response())
}

/// Query of `GET /v1/spaces/{id}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct EventQuery {
    /// Events with a greater sequence number (sync).
    after: Option<i64>,
    /// Events with a smaller sequence number, newest first (history).
    before: Option<i64>,
    /// Page size (clamped to 1 ..= the core's page limit).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/spaces/{id}/events", params(("id" = String, Path), EventQuery), responses((status = 200, description = "A page of events")))]
async fn list_events(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let (q, limit) = page(q)?;
    Ok(Json(json!({"events": core.events(&c, &id, q.after, q.before, limit).await?})).into_response())
}

/// A page query and its clamped limit. axum's own rejection is plain text
/// that may quote the input, so it is replaced.
fn page(q: Result<Query<EventQuery>, QueryRejection>) -> Result<(EventQuery, Option<u32>), ApiError> {
    let Query(q) = q.map_err(|_| ApiError::bad("bad_query", "after, before and limit must be integers"))?;
    let limit = q.limit.map(|l| l.clamp(1, i64::from(u32::MAX)) as u32);
    Ok((q, limit))
}

/// `PUT /v1/spaces/{id}/read-marker`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadMarker {
    /// The last sequence number read.
    pub seq: i64,
}

#[utoipa::path(put, path = "/v1/spaces/{id}/read-marker", params(("id" = String, Path)), request_body = ReadMarker, description = "Moves your read marker forward. Your other sockets, and as a read receipt the sockets of the space's other members, get `{\"type\":\"read_marker\",\"space\":…,\"user\":…,\"seq\":…}` on `/v1/ws` once they have sent the event it points at. Receipts are not events: no sequence number, not in the history.", responses((status = 200, description = "The marker in force (it never moves back)")))]
async fn set_read_marker(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let m: ReadMarker = json_body(&body)?;
    Ok(Json(json!({"seq": core.read_marker(&c, &id, m.seq).await?})).into_response())
}

#[utoipa::path(put, path = "/v1/files/{id}/preview", params(("id" = String, Path)), request_body = Sealed, description = "Stores a file's preview (thumbnail or excerpt), sealed under a key of the file's space; by the org's preview services only. Replaces an earlier one.", responses((status = 204, description = "Stored"), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn put_preview(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let sealed: Sealed = json_body(&body)?;
    core.put_preview(&c, &id, sealed).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/v1/files/{id}/preview", params(("id" = String, Path)), responses((status = 200, description = "`{ciphertext, key_uri, creator, create_date}`"), (status = 404, body = ErrorBody)))]
async fn get_preview(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let p = core.preview(&c, &id).await?;
    Ok(Json(
        json!({"ciphertext": p.ciphertext, "key_uri": p.key_uri, "creator": p.creator, "create_date": p.create_date}),
    )
    .into_response())
}

#[utoipa::path(put, path = "/v1/spaces/{id}/events/{event}/index", params(("id" = String, Path), ("event" = String, Path)), request_body = crate::service::IndexEvent, description = "Stores a message's blinded search tokens (keyed hashes under a search key derived from the space's content key: the core cannot invert them). By the message's sender, or by one of the org's search indexers (re-indexing under a newer key). Replaces earlier tokens of that message.", responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn index_event(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((id, event)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let req: crate::service::IndexEvent = json_body(&body)?;
    core.index_event(&c, &id, &event, req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/v1/spaces/{id}/index", params(("id" = String, Path)), request_body = crate::service::IndexEvents, description = "Stores the blinded search tokens of 1 to 200 messages in one transaction (a backfill or a re-index after rotation). Each item is checked as `PUT /v1/spaces/{id}/events/{event}/index` checks one; if any is refused, nothing is stored and the message names the item (`items[i]: ...`).", responses((status = 200, description = "`{indexed}`: how many messages"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn index_events(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let req: crate::service::IndexEvents = json_body(&body)?;
    let n = core.index_events(&c, &id, req).await?;
    Ok(Json(json!({"indexed": n})).into_response())
}

#[utoipa::path(post, path = "/v1/spaces/{id}/search", params(("id" = String, Path)), request_body = crate::service::SearchRequest, description = "The events whose tokens hold every token of one of the queries (one per key version), newest first. Candidates only: clients decrypt and rank them, and drop any that do not match.", responses((status = 200, description = "`{events}`"), (status = 400, body = ErrorBody)))]
async fn search(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let req: crate::service::SearchRequest = json_body(&body)?;
    Ok(Json(json!({"events": core.search(&c, &id, req).await?})).into_response())
}

#[utoipa::path(get, path = "/v1/spaces/{id}/search/keys", params(("id" = String, Path)), responses((status = 200, description = "`{keys: [{key_uri, events}]}`: the key versions the space's tokens are under")))]
async fn search_keys(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let keys: Vec<_> =
        core.search_keys(&c, &id).await?.into_iter().map(|(k, n)| json!({"key_uri": k, "events": n})).collect();
    Ok(Json(json!({"keys": keys})).into_response())
}

/// `PUT /v1/webhook`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// Where to POST your spaces' events (`https://…`).
    pub url: String,
}

#[utoipa::path(put, path = "/v1/webhook", request_body = SetWebhook, description = "Registers where the core POSTs every event of your spaces (bots). The answer's `secret` (shown only here; registering again rotates it) verifies each request: `X-Custos-Signature: v1=<hex HMAC-SHA256(secret, \"v1:\" + X-Custos-Request-Timestamp + \":\" + body)>`. Body: `{\"type\":\"event\",\"event\":{…}}` as on `/v1/ws`. Retried with backoff until a 2xx answer, in order per space, at least once (dedupe by `X-Custos-Event-Id`).", responses((status = 200, description = "`{url, created, secret}`"), (status = 400, body = ErrorBody)))]
async fn put_webhook(State(core): State<Arc<Core>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let b: SetWebhook = json_body(&body)?;
    let (w, secret) = core.set_webhook(&c, &b.url).await?;
    Ok(Json(json!({"url": w.url, "created": w.create_date, "secret": secret})).into_response())
}

#[utoipa::path(get, path = "/v1/webhook", responses((status = 200, description = "`{url, created}` (never the secret)"), (status = 404, body = ErrorBody)))]
async fn get_webhook(State(core): State<Arc<Core>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let w = core.webhook(&c).await?;
    Ok(Json(json!({"url": w.url, "created": w.create_date})).into_response())
}

#[utoipa::path(delete, path = "/v1/webhook", responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)))]
async fn delete_webhook(State(core): State<Arc<Core>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    core.delete_webhook(&c).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/v1/spaces/{id}/files", params(("id" = String, Path)), request_body = CreateFile, responses((status = 201, description = "The upload"), (status = 413, body = ErrorBody)))]
async fn create_file(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let f = core.create_file(&c, &id, json_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(f)).into_response())
}

#[utoipa::path(get, path = "/v1/files/{id}", params(("id" = String, Path)), responses((status = 200, description = "The file's record (encrypted metadata)")))]
async fn get_file(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let (f, _) = core.chunks(&c, &id).await?;
    Ok(Json(f).into_response())
}

#[utoipa::path(put, path = "/v1/files/{id}/chunks/{index}", params(("id" = String, Path), ("index" = i64, Path)), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody)))]
async fn put_chunk(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((id, index)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let index: i64 =
        index.parse().map_err(|_| ApiError::bad("bad_chunk_index", "the chunk index must be an integer"))?;
    core.put_chunk(&c, &id, index, body).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/v1/files/{id}/chunks", params(("id" = String, Path)), responses((status = 200, description = "The chunk indexes stored so far (to resume an upload)")))]
async fn list_chunks(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let (f, chunks) = core.chunks(&c, &id).await?;
    Ok(Json(json!({"file": f.id, "chunk_count": f.chunk_count(), "stored": chunks})).into_response())
}

#[utoipa::path(post, path = "/v1/files/{id}/complete", params(("id" = String, Path)), responses((status = 200, description = "The file-ready event"), (status = 409, body = ErrorBody)))]
async fn complete_file(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    Ok(Json(core.complete_file(&c, &id).await?).into_response())
}

#[utoipa::path(get, path = "/v1/files/{id}/chunks/{index}", params(("id" = String, Path), ("index" = i64, Path)), responses((status = 200, description = "The chunk's ciphertext", content_type = "application/octet-stream")))]
async fn get_chunk(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let index: i64 = index.parse().map_err(|_| ApiError::not_found("chunk"))?;
    let b = core.get_chunk(&c, &id, index).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response())
}

#[utoipa::path(get, path = "/v1/compliance/spaces/{id}", tag = "compliance", params(("id" = String, Path)), description = "For the org's compliance readers (`compliance_readers` in the core's config): a space that has or had a member of the reader's org, its current members and its former members. Read only; logged. Anyone else, and any other space, gets 404 `not_found` as for a space that does not exist.", responses((status = 200, body = crate::compliance::ComplianceSpace), (status = 404, body = ErrorBody)))]
async fn compliance_space(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    Ok(Json(core.compliance_space(&c, &id).await?).into_response())
}

#[utoipa::path(get, path = "/v1/compliance/spaces/{id}/events", tag = "compliance", params(("id" = String, Path), EventQuery), description = "For compliance readers: a page of the space's events (ciphertext), paged as `GET /v1/spaces/{id}/events`. Read only; logged.", responses((status = 200, description = "A page of events"), (status = 404, body = ErrorBody)))]
async fn compliance_events(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let (q, limit) = page(q)?;
    Ok(Json(json!({"events": core.compliance_events(&c, &id, q.after, q.before, limit).await?})).into_response())
}

#[utoipa::path(get, path = "/v1/compliance/files/{id}", tag = "compliance", params(("id" = String, Path)), description = "For compliance readers: a file's record (sealed metadata) in a space they may read. Read only; logged.", responses((status = 200, description = "The file's record"), (status = 404, body = ErrorBody)))]
async fn compliance_file(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    Ok(Json(core.compliance_file(&c, &id).await?).into_response())
}

#[utoipa::path(get, path = "/v1/compliance/files/{id}/chunks/{index}", tag = "compliance", params(("id" = String, Path), ("index" = i64, Path)), description = "For compliance readers: one chunk of a ready file (ciphertext). Read only; logged.", responses((status = 200, description = "The chunk's ciphertext", content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
async fn compliance_chunk(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let index: i64 = index.parse().map_err(|_| ApiError::not_found("chunk"))?;
    let b = core.compliance_chunk(&c, &id, index).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response())
}

#[utoipa::path(post, path = "/kms/{domain}/messages", params(("domain" = String, Path, description = "The KMS domain")), request_body(content = String, content_type = "application/jose"), description = "Relays a compact KMS message (`application/jose`) or a `{\"kmsMessages\": [...]}` batch (`application/json`) to the caller's own org's KMS. Per caller, at most `relay_burst` messages at once and `relay_per_second` sustained (a batch counts as its number of messages).", responses((status = 200, description = "The KMS's answer, unread"), (status = 403, body = ErrorBody, description = "`kms_not_your_org`: that KMS does not serve the caller's org (other orgs reach it through their own KMS, by federation)"), (status = 404, body = ErrorBody, description = "No such KMS"), (status = 413, body = ErrorBody, description = "Too large, or `relay_batch_too_large`: more messages than `relay_burst`"), (status = 429, body = ErrorBody, description = "`relay_throttled`: over the caller's relay limit; `Retry-After` says when to retry (the KMS's own 429, passed through, has none)"), (status = 502, body = ErrorBody, description = "The KMS is unreachable")))]
async fn relay(
    State(core): State<Arc<Core>>,
    State(links): State<Arc<Links>>,
    headers: HeaderMap,
    Path(domain): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&core, &headers).await?;
    let ctype =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/jose").to_string();
    let (status, ctype, answer) = crate::relay::forward(&core, &links, &c, &domain, &ctype, body).await?;
    Ok((status, [(header::CONTENT_TYPE, ctype)], answer).into_response())
}
