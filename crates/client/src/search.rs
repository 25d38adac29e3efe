//! Search over encrypted spaces (crate `search`): a message's terms travel
//! to the core only as blinded tokens under a search key derived from the
//! message's content key; queries are blinded the same way, one per key
//! version the space's tokens are under; the core returns candidates, which
//! are decrypted and ranked here (and dropped if they do not match).

use search::{rank, Query};
use serde_json::json;

use crate::engine::search::{query_tokens, search_key, text_tokens};
use crate::error::{Error, Result};
use crate::session::Session;
use crate::types::{Content, FileId, Message, SpaceId};

/// Most key versions one search queries.
const MAX_KEYS: usize = 64;

/// One search result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// The message, decrypted and checked.
    pub message: Message,
    /// Relevance (higher first).
    pub score: f32,
}

/// Largest file whose text is indexed.
pub const MAX_INDEXED_FILE: u64 = 20 * 1024 * 1024;

/// Events per page when re-indexing: one core request each (its batch limit is 200).
const REINDEX_PAGE: u32 = 200;
/// Most tokens in one re-index request (about 25 bytes each as JSON).
const REINDEX_TOKENS: usize = 40_000;

impl Session {
    /// The text of the file a `file_ready` event announces, if it is a text
    /// file small enough (downloaded to a private temporary file, then removed).
    async fn file_text(&self, e: &crate::core_api::CoreEvent) -> Result<Option<String>> {
        let Some(file) = e.target.as_ref().map(FileId::from) else { return Ok(None) };
        let info = match self.file_info(&file).await {
            Ok(i) => i,
            Err(Error::NotAuthorized { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        if info.size > MAX_INDEXED_FILE {
            return Ok(None);
        }
        let tmp = std::env::temp_dir().join(format!("custos-index-{}", uuid::Uuid::new_v4()));
        let got = self.download_to(&file, &tmp, false, &|_, _| {}).await;
        let bytes = got.and_then(|_| std::fs::read(&tmp).map_err(Error::from));
        let _ = std::fs::remove_file(&tmp);
        Ok(search::extract_text(&bytes?, None))
    }

    /// Searches a space: at most `limit` messages, most relevant first.
    pub async fn search(&self, space: &SpaceId, query: &str, limit: u32) -> Result<Vec<SearchHit>> {
        let q = Query::parse(query);
        if q.is_empty() {
            return Err(Error::Invalid("the query has no searchable word (two letters at least)".into()));
        }
        let mut queries = Vec::new();
        for uri in self.core.search_keys(space).await?.into_iter().take(MAX_KEYS) {
            // A key we may not read is a part of the history we cannot search.
            let key = match self.kms.key(&uri).await {
                Ok(k) => k,
                Err(Error::NotAuthorized { .. }) => continue,
                Err(e) => return Err(e),
            };
            let tokens = query_tokens(&search_key(&key.key, &key.uri.to_string())?, &q);
            if !tokens.is_empty() {
                queries.push(json!({"key_uri": uri, "tokens": tokens}));
            }
        }
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let candidates = self.core.search(space, &json!(queries), limit.clamp(1, 200)).await?;
        let mut messages = Vec::with_capacity(candidates.len());
        for e in &candidates {
            messages.push(self.decrypt(e).await);
        }
        let docs: Vec<(usize, &str)> = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match &m.content {
                Content::Text(t) | Content::Edit(t) => Some((i, t.as_str())),
                _ => None,
            })
            .collect();
        let mut hits: Vec<SearchHit> =
            rank(&q, &docs).into_iter().map(|(i, score)| SearchHit { message: messages[i].clone(), score }).collect();
        // Files matched on their text (indexed by the org's indexer): not re-checked
        // here without downloading them, so listed after the messages, unscored.
        hits.extend(
            messages
                .iter()
                .filter(|m| matches!(m.content, Content::FileReady))
                .map(|m| SearchHit { message: m.clone(), score: 0.0 }),
        );
        hits.truncate(limit as usize);
        Ok(hits)
    }

    /// Re-indexes a space's messages and edits under its newest key (the
    /// org's search indexer, after a rotation or to backfill history);
    /// how many were indexed. Messages it cannot read are skipped.
    pub async fn reindex(&self, space: &SpaceId) -> Result<u64> {
        let resource = self.space(space).await?.resource;
        let newest = self.kms.newest_key(&resource).await?;
        let search = search_key(&newest.key, &newest.uri.to_string())?;
        let key_uri = newest.uri.to_string();
        let (mut after, mut n) = (0i64, 0u64);
        loop {
            // A page of history, indexed in one request (one transaction at the core).
            let page = self.core.events(space, Some(after), None, Some(REINDEX_PAGE)).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let (mut items, mut batch_tokens) = (Vec::new(), 0usize);
            for e in &page {
                let text = match e.kind.as_str() {
                    "file_ready" => self.file_text(e).await?,
                    "message" | "edit" => match self.decrypt(e).await.content {
                        Content::Text(t) | Content::Edit(t) => Some(t),
                        _ => None,
                    },
                    _ => None,
                };
                let Some(text) = text else { continue };
                n += 1;
                let tokens = text_tokens(&search, &text);
                if !tokens.is_empty() {
                    // Requests stay well under the core's body limit (about 1 MB).
                    if batch_tokens + tokens.len() > REINDEX_TOKENS && !items.is_empty() {
                        self.core.index_events(space, &std::mem::take(&mut items)).await?;
                        batch_tokens = 0;
                    }
                    batch_tokens += tokens.len();
                    items.push(json!({"event": e.id, "key_uri": key_uri, "tokens": tokens}));
                }
            }
            if !items.is_empty() {
                self.core.index_events(space, &items).await?;
            }
        }
        Ok(n)
    }
}
