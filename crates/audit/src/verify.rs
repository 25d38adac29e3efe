//! Offline verification of an exported log (JSON lines), with no database.
//!
//! [`verify_jsonl`] reads an export line by line and stops at the first
//! problem, which it reports with its line number, the seq concerned and
//! what is wrong ([`ProblemKind`]). It checks that:
//!
//! - every line is the canonical JSON of an entry, a stored checkpoint or
//!   the export seal, and nothing else: any changed byte either changes a
//!   value (caught by a hash or a signature) or breaks the canonical form;
//! - every entry's hash matches its content, its `prev` the previous entry's
//!   hash, seqs run without gaps and times never go back;
//! - every checkpoint and the seal are PS256 JWSs of `typ`
//!   `kms-audit-checkpoint` verifying with the given key, stand right after
//!   the entry they cover (`count`, `last_hash`), have consecutive indexes
//!   and strictly increasing times;
//! - the last line is the seal, which covers the last entry and names the
//!   first entry and the stored checkpoints the export holds: lines removed
//!   at either end, or appended after it, are caught.

use std::io::BufRead;
use std::io::Read;

use jose::RsaPublicKey;
use serde::Deserialize;

use crate::canon;
use crate::checkpoint::{line_value, verify_checkpoint, CheckpointBody, CheckpointError, ExportRange};
use crate::entry::{Action, ActorKind, Detail, Entry, Outcome, ENTRY_VERSION, GENESIS_HASH};

/// Longest line accepted (128 KiB; real lines are far shorter).
pub const MAX_LINE_LEN: usize = 128 * 1024;

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lines read (up to and including the one with the problem).
    pub lines: u64,
    /// Entries verified.
    pub entries: u64,
    /// Stored checkpoints verified (the seal not included).
    pub checkpoints: u64,
    /// Seq of the first entry.
    pub first_seq: Option<u64>,
    /// Seq of the last verified entry.
    pub last_seq: Option<u64>,
    /// Time of the last verified checkpoint or seal (ms since the epoch).
    pub last_checkpoint_time: Option<u64>,
    /// Whether the export ended with a valid seal.
    pub sealed: bool,
    /// Whether the first entry's `prev` is itself checked: it is seq 1, or a
    /// stored checkpoint covering the entries before it opens the export.
    pub anchored: bool,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

impl Report {
    /// Whether the log verified completely.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none() && self.sealed
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number (for a truncated input, one past the last line).
    pub line: u64,
    /// The entry seq concerned, if any (for a missing entry, the first missing seq).
    pub seq: Option<u64>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The details, in words.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}: {}", self.kind.as_str(), self.detail)
    }
}

/// Kinds of problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The input could not be read: I/O error, invalid UTF-8, a line too long, an empty line.
    Unreadable,
    /// A line is not an entry, checkpoint or seal (bad JSON, unknown type or member, bad value).
    Malformed,
    /// A line parses but is not in canonical form (whitespace, escapes, member order, duplicates).
    NonCanonical,
    /// An entry's content does not match its own hash: it was modified.
    ModifiedEntry,
    /// An entry's `prev` does not match the previous entry's hash.
    BrokenChain,
    /// Entries are missing (a seq gap, or the export does not start where its seal says).
    MissingEntries,
    /// Stored checkpoints are missing (an index gap, or not those the seal names).
    MissingCheckpoint,
    /// Lines out of order: seq, index or time going backwards, a checkpoint away from its entry.
    Reordered,
    /// A checkpoint or seal signature does not verify, or is not a PS256 JWS.
    BadSignature,
    /// A checkpoint or seal was signed in another context (JWS `typ`).
    WrongType,
    /// A validly signed checkpoint disagrees with the entries (they were rewritten), or a
    /// checkpoint line's visible fields disagree with what it signs.
    CheckpointMismatch,
    /// Lines after the export's seal.
    AfterSeal,
    /// The input ends early: no seal at the end, or a last line cut short.
    Truncated,
}

impl ProblemKind {
    /// A short snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Malformed => "malformed",
            ProblemKind::NonCanonical => "non_canonical",
            ProblemKind::ModifiedEntry => "modified_entry",
            ProblemKind::BrokenChain => "broken_chain",
            ProblemKind::MissingEntries => "missing_entries",
            ProblemKind::MissingCheckpoint => "missing_checkpoint",
            ProblemKind::Reordered => "reordered",
            ProblemKind::BadSignature => "bad_signature",
            ProblemKind::WrongType => "wrong_type",
            ProblemKind::CheckpointMismatch => "checkpoint_mismatch",
            ProblemKind::AfterSeal => "after_seal",
            ProblemKind::Truncated => "truncated",
        }
    }
}

/// Verifies an export (see the module docs) against the KMS static key.
pub fn verify_jsonl<R: BufRead>(reader: R, key: &RsaPublicKey) -> Report {
    verify_jsonl_keys(reader, std::slice::from_ref(key))
}

/// Like [`verify_jsonl`], accepting checkpoints signed by any of `keys`
/// (picked by `kid` when both sides have one): for a log spanning a key rotation.
pub fn verify_jsonl_keys<R: BufRead>(mut reader: R, keys: &[RsaPublicKey]) -> Report {
    let mut v = Verifier::new(keys);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = (&mut reader).take(MAX_LINE_LEN as u64 + 1).read_until(b'\n', &mut buf);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                v.lines += 1;
                return v.fail(ProblemKind::Unreadable, None, format!("read error: {e}"));
            }
        };
        if n == 0 {
            break;
        }
        v.lines += 1;
        if buf.last() != Some(&b'\n') {
            if buf.len() > MAX_LINE_LEN {
                return v.fail(ProblemKind::Unreadable, None, format!("line longer than {MAX_LINE_LEN} bytes"));
            }
            return v.fail(ProblemKind::Truncated, None, "last line is cut short (no final newline)".into());
        }
        buf.pop();
        let Ok(line) = std::str::from_utf8(&buf) else {
            return v.fail(ProblemKind::Unreadable, None, "line is not valid UTF-8".into());
        };
        if let Err((kind, seq, detail)) = v.line(line) {
            return v.fail(kind, seq, detail);
        }
    }
    if let Err((kind, seq, detail)) = v.finish() {
        v.lines += 1;
        return v.fail(kind, seq, detail);
    }
    v.report(None)
}

type Fail = (ProblemKind, Option<u64>, String);

fn fail<T>(kind: ProblemKind, seq: Option<u64>, detail: impl Into<String>) -> Result<T, Fail> {
    Err((kind, seq, detail.into()))
}

#[derive(Deserialize)]
struct Tag {
    #[serde(rename = "type")]
    typ: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    #[serde(rename = "type")]
    _type: String,
    v: u64,
    seq: u64,
    time: u64,
    node: String,
    actor: String,
    actor_kind: ActorKind,
    on_behalf_of: Option<String>,
    case: Option<String>,
    action: Action,
    resource: Option<String>,
    keys: Vec<String>,
    outcome: Outcome,
    detail: Detail,
    prev: String,
    hash: String,
}

#[derive(Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    #[serde(rename = "type")]
    _type: String,
    count: u64,
    last_hash: String,
    time: u64,
    node: String,
    index: Option<u64>,
    export: Option<ExportRange>,
    jws: String,
}

struct Last {
    seq: u64,
    hash: String,
    time: u64,
}

struct Verifier<'k> {
    keys: &'k [RsaPublicKey],
    lines: u64,
    entries: u64,
    checkpoints: u64,
    /// (seq, line) of the first entry.
    first: Option<(u64, u64)>,
    last: Option<Last>,
    /// Checkpoints before the first entry: (count, last_hash).
    anchor: Option<(u64, String)>,
    first_index: Option<u64>,
    last_index: Option<u64>,
    last_cp_time: Option<u64>,
    sealed: bool,
}

impl<'k> Verifier<'k> {
    fn new(keys: &'k [RsaPublicKey]) -> Self {
        Self {
            keys,
            lines: 0,
            entries: 0,
            checkpoints: 0,
            first: None,
            last: None,
            anchor: None,
            first_index: None,
            last_index: None,
            last_cp_time: None,
            sealed: false,
        }
    }

    fn report(&self, problem: Option<Problem>) -> Report {
        Report {
            lines: self.lines,
            entries: self.entries,
            checkpoints: self.checkpoints,
            first_seq: self.first.map(|f| f.0),
            last_seq: self.last.as_ref().map(|l| l.seq),
            last_checkpoint_time: self.last_cp_time,
            sealed: self.sealed && problem.is_none(),
            anchored: match self.first {
                Some((1, _)) => true,
                Some(_) => self.anchor.is_some(),
                None => false,
            },
            problem,
        }
    }

    fn fail(&self, kind: ProblemKind, seq: Option<u64>, detail: String) -> Report {
        self.report(Some(Problem { line: self.lines, seq, kind, detail }))
    }

    fn line(&mut self, line: &str) -> Result<(), Fail> {
        if line.is_empty() {
            return fail(ProblemKind::Unreadable, None, "empty line");
        }
        if self.sealed {
            return fail(ProblemKind::AfterSeal, None, "a line follows the export's seal (unsigned addition)");
        }
        let tag: Tag =
            serde_json::from_str(line).map_err(|e| (ProblemKind::Malformed, None, format!("not JSON: {e}")))?;
        match tag.typ.as_deref() {
            Some("entry") => self.entry(line),
            Some("checkpoint") => self.checkpoint(line, false),
            Some("seal") => self.checkpoint(line, true),
            Some(_) => fail(ProblemKind::Malformed, None, "unknown line type"),
            None => fail(ProblemKind::Malformed, None, "no \"type\" member"),
        }
    }

    fn entry(&mut self, line: &str) -> Result<(), Fail> {
        let l: EntryLine = serde_json::from_str(line)
            .map_err(|e| (ProblemKind::Malformed, None, format!("not a valid entry: {e}")))?;
        let seq = Some(l.seq);
        if l.v != ENTRY_VERSION {
            return fail(ProblemKind::Malformed, seq, format!("unsupported entry version {}", l.v));
        }
        if l.seq == 0 {
            return fail(ProblemKind::Malformed, seq, "seq starts at 1");
        }
        if !canon::is_hash_hex(&l.prev) || !canon::is_hash_hex(&l.hash) {
            return fail(ProblemKind::Malformed, seq, "prev and hash must be 64 lowercase hex digits");
        }
        let e = Entry {
            seq: l.seq,
            time: l.time,
            node: l.node,
            actor: l.actor,
            actor_kind: l.actor_kind,
            on_behalf_of: l.on_behalf_of,
            case: l.case,
            action: l.action,
            resource: l.resource,
            keys: l.keys,
            outcome: l.outcome,
            detail: l.detail,
            prev: l.prev,
            hash: l.hash,
        };
        e.detail.check_shape().map_err(|err| (ProblemKind::Malformed, seq, err.to_string()))?;
        if e.to_jsonl() != line {
            return fail(ProblemKind::NonCanonical, seq, "entry is not in canonical form (altered formatting?)");
        }
        if !e.hash_is_valid() {
            return fail(
                ProblemKind::ModifiedEntry,
                seq,
                "entry content does not match its hash: the entry was modified",
            );
        }
        match &self.last {
            Some(last) => {
                if e.seq <= last.seq {
                    return fail(
                        ProblemKind::Reordered,
                        seq,
                        format!("seq {} follows seq {}: duplicated or out of order", e.seq, last.seq),
                    );
                }
                if e.seq > last.seq + 1 {
                    return fail(
                        ProblemKind::MissingEntries,
                        Some(last.seq + 1),
                        format!(
                            "seq {} follows seq {}: entries {} to {} are missing (or out of order)",
                            e.seq,
                            last.seq,
                            last.seq + 1,
                            e.seq - 1
                        ),
                    );
                }
                if e.prev != last.hash {
                    return fail(
                        ProblemKind::BrokenChain,
                        seq,
                        format!("prev does not match the hash of entry {}: that entry was replaced", last.seq),
                    );
                }
                if e.time < last.time {
                    return fail(ProblemKind::Reordered, seq, format!("time goes back from entry {}", last.seq));
                }
            }
            None => {
                if let Some((count, last_hash)) = &self.anchor {
                    if e.seq != count + 1 {
                        return fail(
                            ProblemKind::MissingEntries,
                            Some(count + 1),
                            format!(
                                "the opening checkpoint covers {count} entries but the first entry is seq {}",
                                e.seq
                            ),
                        );
                    }
                    if &e.prev != last_hash {
                        return fail(ProblemKind::BrokenChain, seq, "prev does not match the opening checkpoint");
                    }
                } else if e.seq == 1 && e.prev != GENESIS_HASH {
                    return fail(ProblemKind::BrokenChain, seq, "entry 1 must have prev = 64 zeros");
                }
                self.first = Some((e.seq, self.lines));
            }
        }
        self.entries += 1;
        self.last = Some(Last { seq: e.seq, hash: e.hash, time: e.time });
        Ok(())
    }

    fn checkpoint(&mut self, line: &str, seal: bool) -> Result<(), Fail> {
        let what = if seal { "seal" } else { "checkpoint" };
        let l: CheckpointLine = serde_json::from_str(line)
            .map_err(|e| (ProblemKind::Malformed, None, format!("not a valid {what}: {e}")))?;
        let seq = Some(l.count);
        let body = verify_checkpoint(&l.jws, self.keys).map_err(|e| match e {
            CheckpointError::WrongType { .. } => (ProblemKind::WrongType, seq, format!("{what} refused: {e}")),
            CheckpointError::Payload(_) => (ProblemKind::Malformed, seq, format!("{what}: {e}")),
            CheckpointError::Jws(_) | CheckpointError::BadSignature => {
                (ProblemKind::BadSignature, seq, format!("{what} signature: {e}"))
            }
        })?;
        if line_value(&body, &l.jws).render() != line {
            let same = body.count == l.count
                && body.last_hash == l.last_hash
                && body.time == l.time
                && body.node == l.node
                && body.index == l.index
                && body.export == l.export
                && (l._type == "seal") == body.export.is_some();
            return if same {
                fail(ProblemKind::NonCanonical, seq, format!("{what} is not in canonical form (altered formatting?)"))
            } else {
                fail(ProblemKind::CheckpointMismatch, seq, format!("{what} line differs from what its JWS signs"))
            };
        }
        if let Some(t) = self.last_cp_time {
            if body.time <= t {
                return fail(
                    ProblemKind::Reordered,
                    seq,
                    format!("{what} time is not after the previous checkpoint's"),
                );
            }
        }
        self.placement(&body, what)?;
        match body.export {
            None => {
                let index = body.index.expect("checked by verify_checkpoint");
                if let Some(prev) = self.last_index {
                    if index <= prev {
                        return fail(
                            ProblemKind::Reordered,
                            seq,
                            format!("checkpoint {index} follows checkpoint {prev}"),
                        );
                    }
                    if index > prev + 1 {
                        return fail(
                            ProblemKind::MissingCheckpoint,
                            seq,
                            format!("checkpoint {index} follows checkpoint {prev}: checkpoints missing"),
                        );
                    }
                }
                self.first_index.get_or_insert(index);
                self.last_index = Some(index);
                self.checkpoints += 1;
            }
            Some(range) => {
                self.seal(&body, range)?;
                self.sealed = true;
            }
        }
        self.last_cp_time = Some(body.time);
        Ok(())
    }

    /// A checkpoint stands right after the entry it covers.
    fn placement(&mut self, body: &CheckpointBody, what: &str) -> Result<(), Fail> {
        let seq = Some(body.count);
        match &self.last {
            Some(last) => {
                if body.count > last.seq {
                    return fail(
                        ProblemKind::MissingEntries,
                        Some(last.seq + 1),
                        format!(
                            "{what} covers {} entries but the last entry before it is seq {}: entries missing (or out of order)",
                            body.count, last.seq
                        ),
                    );
                }
                if body.count < last.seq {
                    return fail(
                        ProblemKind::Reordered,
                        seq,
                        format!("{what} covering {} entries stands after entry {}", body.count, last.seq),
                    );
                }
                if body.last_hash != last.hash {
                    return fail(
                        ProblemKind::CheckpointMismatch,
                        seq,
                        format!("{what} signs another hash for entry {}: entries up to it were rewritten", last.seq),
                    );
                }
            }
            None => {
                if body.count == 0 && body.last_hash != GENESIS_HASH {
                    return fail(
                        ProblemKind::CheckpointMismatch,
                        seq,
                        format!("{what} of an empty log must sign 64 zeros"),
                    );
                }
                match &self.anchor {
                    Some((count, hash)) if *count != body.count || *hash != body.last_hash => {
                        return fail(
                            ProblemKind::Reordered,
                            seq,
                            format!("{what} disagrees with the opening checkpoint"),
                        );
                    }
                    Some(_) => {}
                    None => self.anchor = Some((body.count, body.last_hash.clone())),
                }
            }
        }
        Ok(())
    }

    fn seal(&mut self, body: &CheckpointBody, range: ExportRange) -> Result<(), Fail> {
        let seq = Some(body.count);
        if range.from_seq == 0 || range.from_seq > body.count + 1 {
            return fail(ProblemKind::Malformed, seq, "seal names an impossible first entry");
        }
        if range.first_checkpoint == 0 || range.first_checkpoint > range.last_checkpoint + 1 {
            return fail(ProblemKind::Malformed, seq, "seal names an impossible checkpoint range");
        }
        match self.first {
            Some((first, line)) if first != range.from_seq => {
                let missing = range.from_seq.min(first);
                return Err((
                    ProblemKind::MissingEntries,
                    Some(missing),
                    format!(
                        "the seal says the export starts at seq {} but its first entry (line {line}) is seq {first}",
                        range.from_seq
                    ),
                ));
            }
            Some(_) => {}
            None => {
                if range.from_seq != body.count + 1 {
                    return fail(
                        ProblemKind::MissingEntries,
                        Some(range.from_seq),
                        format!("the seal covers entries {} to {} but none are present", range.from_seq, body.count),
                    );
                }
            }
        }
        let expected = range.first_checkpoint..=range.last_checkpoint;
        match (self.first_index, self.last_index) {
            (None, None) if expected.is_empty() => {}
            (Some(first), Some(last)) if first == range.first_checkpoint && last == range.last_checkpoint => {}
            (first, last) => {
                return fail(
                    ProblemKind::MissingCheckpoint,
                    seq,
                    format!(
                        "the seal names checkpoints {} to {} but the export holds {}",
                        range.first_checkpoint,
                        range.last_checkpoint,
                        match (first, last) {
                            (Some(a), Some(b)) => format!("{a} to {b}"),
                            _ => "none".into(),
                        }
                    ),
                );
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), Fail> {
        if self.sealed {
            return Ok(());
        }
        let next = self.last.as_ref().map(|l| l.seq + 1);
        if self.lines == 0 {
            return fail(ProblemKind::Truncated, None, "empty input: an export always ends with its seal");
        }
        fail(ProblemKind::Truncated, next, "the export ends without its seal: lines were cut from the end")
    }
}
