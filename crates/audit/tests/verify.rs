//! Offline verification: a small real export (SQLite) is damaged in every
//! way we can enumerate (every byte, every line, every cut, every swap,
//! foreign and mis-typed signatures, a rewritten chain) and each damage
//! must be reported.

mod common;

use std::sync::OnceLock;

use audit::{
    verify_jsonl, verify_jsonl_keys, Checkpoint, CheckpointBody, CheckpointSigner, Entry, ProblemKind, Report,
    RsaCheckpointSigner,
};
use jose::{HeaderParams, SigAlg};
use kms_protocol::SigningContext;

use common::*;

/// The export under test, 14 lines:
///
/// ```text
///  1 checkpoint idx 1, count 0 (taken on the empty log)
///  2..4 entries 1..3
///  5 checkpoint idx 2, count 3
///  6..8 entries 4..6
///  9 checkpoint idx 3, count 6
/// 10 checkpoint idx 4, count 6 (same count, later time)
/// 11..13 entries 7..9
/// 14 seal
/// ```
fn export() -> &'static [u8] {
    static EXPORT: OnceLock<Vec<u8>> = OnceLock::new();
    EXPORT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(sqlstore::testing::unique("audit_verify_test"));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}", dir.join("audit.db").display());
            let log = audit::AuditLog::open(&url, "kms-1", signer()).await.unwrap();
            log.checkpoint().await.unwrap();
            for i in 0..9 {
                log.append(sample(i)).await.unwrap();
                if i == 2 {
                    log.checkpoint().await.unwrap();
                }
                if i == 5 {
                    log.checkpoint().await.unwrap();
                    log.checkpoint().await.unwrap();
                }
            }
            let mut out = Vec::new();
            log.export_jsonl(&mut out, 1).await.unwrap();
            log.close().await;
            std::fs::remove_dir_all(&dir).unwrap();
            out
        })
    })
}

fn lines() -> Vec<String> {
    std::str::from_utf8(export()).unwrap().lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    lines.iter().flat_map(|l| l.bytes().chain([b'\n'])).collect()
}

fn verify(bytes: &[u8]) -> Report {
    verify_jsonl(bytes, &public_key())
}

fn problem(bytes: &[u8]) -> (ProblemKind, u64, Option<u64>) {
    let report = verify(bytes);
    let p = report.problem.unwrap_or_else(|| panic!("verified:\n{}", String::from_utf8_lossy(bytes)));
    (p.kind, p.line, p.seq)
}

fn entry_at(line: &str) -> Entry {
    serde_json::from_str(line).unwrap()
}

fn checkpoint_at(line: &str) -> Checkpoint {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let body = audit::verify_checkpoint(v["jws"].as_str().unwrap(), &[public_key()]).unwrap();
    Checkpoint { body, jws: v["jws"].as_str().unwrap().to_owned() }
}

// ---------------------------------------------------------------- the good case

#[test]
fn the_export_verifies_and_reports_counts() {
    let lines = lines();
    assert_eq!(lines.len(), 14, "{lines:#?}");
    let report = verify(export());
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.lines, 14);
    assert_eq!((report.entries, report.checkpoints), (9, 4));
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(9)));
    assert!(report.sealed && report.anchored);
    let seal = checkpoint_at(&lines[13]);
    assert!(seal.is_seal());
    assert_eq!(report.last_checkpoint_time, Some(seal.body.time));
    // Unknown actions (sample 5 uses one) verify like the others.
    assert!(lines[7].contains("\"action\":\"key_escrow_sync\""), "{}", lines[7]);
}

/// An auditor's own implementation of the documented encoding: delete the
/// `hash` member from the line, SHA-256 the rest, chain through `prev`.
#[test]
fn an_auditor_can_recompute_hashes_from_the_documentation() {
    let mut prev = "0".repeat(64);
    for line in lines().iter().filter(|l| l.contains("\"type\":\"entry\"")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let hash = v["hash"].as_str().unwrap();
        let member = format!(",\"hash\":\"{hash}\"");
        assert_eq!(line.matches(&member).count(), 1);
        let without = line.replace(&member, "");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, without.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, hash, "{line}");
        assert_eq!(v["prev"].as_str().unwrap(), prev);
        prev = hash.to_owned();
        // And the JCS property: a generic serializer with sorted keys gives the same bytes
        // (serde_json::Value sorts keys unless its preserve_order feature is on).
        let resorted = serde_json::to_string(&sorted(v)).unwrap();
        assert_eq!(&resorted, line);
    }
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut pairs: Vec<_> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = serde_json::Map::new();
            for (k, v) in pairs {
                out.insert(k, sorted(v));
            }
            serde_json::Value::Object(out)
        }
        other => other,
    }
}

#[test]
fn checkpoints_are_the_kms_servers_own_signatures() {
    let lines = lines();
    let cp = checkpoint_at(&lines[4]);
    cp.verify(&public_key()).unwrap();
    assert_eq!(cp.body, audit::verify_checkpoint(&cp.jws, &[public_key()]).unwrap());
    // What ServerKey::sign produced carries its kid and the audit typ.
    let header: serde_json::Value =
        serde_json::from_slice(&jose::b64::decode(cp.jws.split('.').next().unwrap(), jose::Part::Header).unwrap())
            .unwrap();
    assert_eq!(header["typ"], "kms-audit-checkpoint");
    assert_eq!(header["alg"], "PS256");
    assert_eq!(header["kid"], "kms-static-1");
    // A verifier holding several keys (a rotation) picks the right one.
    let report = verify_jsonl_keys(export(), &[other_key().public_key().clone(), public_key()]);
    assert!(report.is_ok(), "{:?}", report.problem);
}

// ---------------------------------------------------------------- every byte

/// Every byte of the export matters: changing any one (three different
/// ways) is either a different value, caught by a hash or a signature, or
/// not the canonical encoding, and is refused.
#[test]
fn changing_any_byte_is_detected() {
    let original = export();
    let mut tried = 0;
    for pos in 0..original.len() {
        let b = original[pos];
        for replacement in [b ^ 0x01, b ^ 0x20, if b == b'0' { b'1' } else { b'0' }] {
            if replacement == b {
                continue;
            }
            let mut damaged = original.to_vec();
            damaged[pos] = replacement;
            let report = verify(&damaged);
            assert!(!report.is_ok(), "byte {pos} ({:?} -> {:?}) changed undetected", b as char, replacement as char);
            tried += 1;
        }
    }
    assert!(tried > 2 * original.len());
}

#[test]
fn inserting_or_deleting_a_byte_is_detected() {
    let original = export();
    for pos in 0..original.len() {
        let mut shorter = original.to_vec();
        shorter.remove(pos);
        assert!(!verify(&shorter).is_ok(), "deleting byte {pos} undetected");
        if pos % 7 == 0 {
            let mut longer = original.to_vec();
            longer.insert(pos, b' ');
            assert!(!verify(&longer).is_ok(), "inserting a space at {pos} undetected");
        }
    }
}

// ---------------------------------------------------------------- lines

#[test]
fn deleting_any_line_is_detected() {
    let lines = lines();
    for i in 0..lines.len() {
        let mut damaged = lines.clone();
        damaged.remove(i);
        assert!(!verify(&join(&damaged)).is_ok(), "deleting line {} undetected", i + 1);
    }
}

#[test]
fn cutting_the_end_is_detected_for_every_length() {
    let lines = lines();
    for k in 1..=lines.len() {
        let kept = &lines[..lines.len() - k];
        let (kind, line, _) = problem(&join(kept));
        assert_eq!(kind, ProblemKind::Truncated, "cutting {k} lines");
        assert_eq!(line, kept.len() as u64 + 1);
    }
    // Cut inside the last line (no final newline): truncated as well.
    let bytes = export();
    assert_eq!(problem(&bytes[..bytes.len() - 1]).0, ProblemKind::Truncated);
    assert_eq!(problem(&bytes[..bytes.len() - 40]).0, ProblemKind::Truncated);
}

#[test]
fn cutting_the_start_is_detected() {
    let lines = lines();
    for k in 1..lines.len() {
        assert!(!verify(&join(&lines[k..])).is_ok(), "cutting the first {k} lines undetected");
    }
}

#[test]
fn swapping_any_two_lines_is_detected() {
    let lines = lines();
    for i in 0..lines.len() {
        for j in i + 1..lines.len() {
            let mut damaged = lines.clone();
            damaged.swap(i, j);
            assert!(!verify(&join(&damaged)).is_ok(), "swapping lines {} and {} undetected", i + 1, j + 1);
        }
    }
}

#[test]
fn duplicating_any_line_is_detected() {
    let lines = lines();
    for i in 0..lines.len() {
        let mut damaged = lines.clone();
        damaged.insert(i, lines[i].clone());
        assert!(!verify(&join(&damaged)).is_ok(), "duplicating line {} undetected", i + 1);
    }
}

// ---------------------------------------------------------------- what is reported

#[test]
fn a_modified_entry_is_named_by_line_and_seq() {
    let mut lines = lines();
    let e = entry_at(&lines[6]); // seq 5
    assert_eq!(e.seq, 5);
    lines[6] = Entry { actor: "mallory@example.com".into(), ..e }.to_jsonl();
    assert_eq!(problem(&join(&lines)), (ProblemKind::ModifiedEntry, 7, Some(5)));
}

#[test]
fn a_missing_entry_is_named() {
    let mut lines = lines();
    lines.remove(6); // seq 5
    assert_eq!(problem(&join(&lines)), (ProblemKind::MissingEntries, 7, Some(5)));
}

#[test]
fn a_missing_stored_checkpoint_is_named() {
    let mut lines = lines();
    lines.remove(9); // idx 4 (count 6, the second)
    let (kind, line, _) = problem(&join(&lines));
    assert_eq!((kind, line), (ProblemKind::MissingCheckpoint, 13), "the seal names checkpoints 1 to 4");
    let mut lines = self::lines();
    lines.remove(8); // idx 3
    assert_eq!(problem(&join(&lines)).0, ProblemKind::MissingCheckpoint);
}

#[test]
fn two_entries_swapped_are_reported_out_of_order() {
    let mut lines = lines();
    lines.swap(5, 6); // seq 4 and 5
    let (kind, line, seq) = problem(&join(&lines));
    assert_eq!((line, seq), (6, Some(4)));
    assert!(matches!(kind, ProblemKind::MissingEntries | ProblemKind::Reordered), "{kind:?}");
    let mut lines = self::lines();
    lines.swap(8, 9); // two checkpoints at the same count: caught by their indexes (and times)
    let (kind, line, _) = problem(&join(&lines));
    assert_eq!(line, 9);
    assert!(matches!(kind, ProblemKind::MissingCheckpoint | ProblemKind::Reordered), "{kind:?}");
}

#[test]
fn a_rewritten_chain_is_caught_by_the_next_checkpoint() {
    // The attacker changes entry 2 and recomputes every hash and link after it.
    let mut lines = lines();
    let mut prev = None;
    for line in lines.iter_mut() {
        if !line.contains("\"type\":\"entry\"") {
            continue;
        }
        let mut e = entry_at(line);
        if e.seq == 2 {
            e.actor = "mallory@example.com".into();
        }
        if let Some(p) = prev.take() {
            e.prev = p;
        }
        e.hash = e.compute_hash();
        prev = Some(e.hash.clone());
        *line = e.to_jsonl();
    }
    assert_eq!(problem(&join(&lines)), (ProblemKind::CheckpointMismatch, 5, Some(3)));

    // Past the last stored checkpoint, the seal catches it.
    let mut lines = self::lines();
    let mut prev = None;
    for line in lines.iter_mut().filter(|l| l.contains("\"type\":\"entry\"")) {
        let mut e = entry_at(line);
        if e.seq < 8 {
            continue;
        }
        if e.seq == 8 {
            e.actor = "mallory@example.com".into();
        }
        if let Some(p) = prev.take() {
            e.prev = p;
        }
        e.hash = e.compute_hash();
        prev = Some(e.hash.clone());
        *line = e.to_jsonl();
    }
    assert_eq!(problem(&join(&lines)), (ProblemKind::CheckpointMismatch, 14, Some(9)));
}

#[test]
fn forged_lines_after_the_seal_are_refused() {
    let mut lines = lines();
    let last = entry_at(&lines[12]);
    let mut forged = Entry { seq: 10, prev: last.hash.clone(), ..last };
    forged.hash = forged.compute_hash();
    lines.push(forged.to_jsonl());
    assert_eq!(problem(&join(&lines)).0, ProblemKind::AfterSeal);
}

// ---------------------------------------------------------------- signatures

fn resign(line: &str, sign: impl Fn(&CheckpointBody) -> String) -> String {
    let cp = checkpoint_at(line);
    let jws = sign(&cp.body);
    Checkpoint { body: cp.body, jws }.to_jsonl()
}

#[test]
fn a_checkpoint_signed_by_another_key_is_detected() {
    let other = RsaCheckpointSigner::new(other_key());
    for i in [0, 4, 8, 13] {
        let mut lines = lines();
        lines[i] = resign(&lines[i], |b| other.sign(b).unwrap());
        assert_eq!(
            problem(&join(&lines)),
            (ProblemKind::BadSignature, i as u64 + 1, Some(checkpoint_at(&self::lines()[i]).body.count))
        );
    }
}

#[test]
fn a_checkpoint_with_another_typ_is_refused() {
    let key = server_key();
    for ctx in [SigningContext::Reset, SigningContext::Ecdhe, SigningContext::AnonAuth, SigningContext::Connect] {
        let mut lines = lines();
        lines[4] = resign(&lines[4], |b| key.sign(ctx, b).unwrap());
        assert_eq!(problem(&join(&lines)).0, ProblemKind::WrongType, "{ctx:?}");
    }
    // No typ at all.
    let mut lines = lines();
    let private = kms_private_key();
    lines[4] = resign(&lines[4], |b| {
        let json = serde_json::to_vec(b).unwrap();
        jose::jws::sign(SigAlg::PS256, jose::jws::SignKey::Rsa(&private), &HeaderParams::kid("kms-static-1"), &json)
            .unwrap()
    });
    assert_eq!(problem(&join(&lines)).0, ProblemKind::WrongType);
}

#[test]
fn only_ps256_is_accepted() {
    let private = kms_private_key();
    let mut lines = lines();
    lines[4] = resign(&lines[4], |b| {
        let json = serde_json::to_vec(b).unwrap();
        let params = HeaderParams::kid("kms-static-1").with_typ("kms-audit-checkpoint");
        jose::jws::sign(SigAlg::RS256, jose::jws::SignKey::Rsa(&private), &params, &json).unwrap()
    });
    assert_eq!(problem(&join(&lines)).0, ProblemKind::BadSignature);
}

#[test]
fn a_validly_signed_checkpoint_in_the_wrong_place_is_detected() {
    // A genuine checkpoint body with another count, correctly signed by the KMS key.
    let signer = RsaCheckpointSigner::new(kms_private_key());
    let mut lines = lines();
    let mut cp = checkpoint_at(&lines[4]);
    cp.body.count = 4;
    lines[4] = Checkpoint { jws: signer.sign(&cp.body).unwrap(), body: cp.body }.to_jsonl();
    assert_eq!(problem(&join(&lines)).0, ProblemKind::MissingEntries);
    // Visible fields that differ from the signed ones.
    let mut lines = self::lines();
    lines[4] = lines[4].replace("\"count\":3", "\"count\":4");
    assert_eq!(problem(&join(&lines)).0, ProblemKind::CheckpointMismatch);
}

// ---------------------------------------------------------------- format

#[test]
fn non_canonical_encodings_are_refused() {
    let base = lines();
    let variants = [
        base[1].replacen("{\"action\"", "{ \"action\"", 1),
        base[1].replacen("\"actor\":", "\"actor\" :", 1),
        base[1].replace("\"v\":1}", "\"v\":1,\"v\":1}"),
        base[1].replace("\"v\":1}", "\"v\":1.0}"),
        base[1].replacen("\"key_release\"", "\"key\\u005frelease\"", 1),
        base[1].replace("\"type\":\"entry\",\"v\":1}", "\"v\":1,\"type\":\"entry\"}"),
        format!("{}\r", base[1]),
    ];
    for (i, v) in variants.into_iter().enumerate() {
        let mut lines = base.clone();
        assert_ne!(lines[1], v, "variant {i} did not change the line");
        lines[1] = v;
        let (kind, line, _) = problem(&join(&lines));
        assert_eq!(line, 2, "variant {i}");
        assert!(matches!(kind, ProblemKind::NonCanonical | ProblemKind::Malformed), "variant {i}: {kind:?}");
    }
    // A null for an absent member, and an unknown member, are refused too.
    let mut lines = base.clone();
    lines[1] = lines[1].replacen("{\"action\"", "{\"case\":null,\"action\"", 1);
    assert!(!verify(&join(&lines)).is_ok());
    let mut lines = base.clone();
    lines[1] = lines[1].replacen("{\"action\"", "{\"aaa\":1,\"action\"", 1);
    assert_eq!(problem(&join(&lines)).0, ProblemKind::Malformed);
}

#[test]
fn empty_and_blank_inputs_are_refused() {
    assert_eq!(problem(b""), (ProblemKind::Truncated, 1, None));
    assert_eq!(problem(b"\n").0, ProblemKind::Unreadable);
    let mut with_blank = export().to_vec();
    with_blank.extend_from_slice(b"\n");
    assert!(!verify(&with_blank).is_ok());
    let mut bad_utf8 = export().to_vec();
    bad_utf8[10] = 0xff;
    assert_eq!(problem(&bad_utf8).0, ProblemKind::Unreadable);
}
