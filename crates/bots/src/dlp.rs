//! Data loss prevention: the org's DLP service reads new messages of the
//! spaces it is in (as any member, with keys its org's KMS policy allows),
//! looks for card numbers (Luhn-checked) and the org's own patterns, hides
//! the offending message where the core lets it (an org-level moderator),
//! and reports each finding to the org's compliance space, without the
//! matched text: the rule, where, who, and the last four characters.
//!
//! Regular expressions are the `regex` crate's: linear time, so a hostile
//! message cannot make the scan run long.

use std::sync::Arc;

use regex::Regex;

use crate::{Bot, Ctx};

/// Longest text scanned (what `search::extract_text` gives of a file at most; messages are far shorter).
const MAX_SCAN: usize = 1024 * 1024;

/// What to look for.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Payment card numbers: 13 to 19 digits (spaces or dashes between them), Luhn-valid.
    pub cards: bool,
    /// The org's own patterns, by name.
    pub patterns: Vec<(String, Regex)>,
}

impl Rules {
    /// Card numbers, plus `name=regex` patterns.
    pub fn new(cards: bool, patterns: &[String]) -> Result<Rules, String> {
        let mut out = Vec::new();
        for p in patterns {
            let (name, re) = p.split_once('=').ok_or_else(|| format!("pattern {p:?} is not name=regex"))?;
            if name.is_empty() || name.len() > 64 {
                return Err(format!("pattern name {name:?} must be 1 to 64 characters"));
            }
            let re =
                regex::RegexBuilder::new(re).size_limit(1 << 20).build().map_err(|e| format!("pattern {name}: {e}"))?;
            out.push((name.to_string(), re));
        }
        Ok(Rules { cards, patterns: out })
    }
}

/// One finding: which rule, and a masked excerpt (never the whole match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name (`card number` for cards).
    pub rule: String,
    /// `…` and the last four characters of the match.
    pub masked: String,
}

fn mask(s: &str) -> String {
    let tail: String = s.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

/// Whether `digits` (ASCII digits only) passes the Luhn check.
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn card_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("a valid pattern"))
}

/// Everything `rules` finds in `text`.
pub fn scan(rules: &Rules, text: &str) -> Vec<Finding> {
    let mut end = text.len().min(MAX_SCAN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let mut out = Vec::new();
    if rules.cards {
        for m in card_regex().find_iter(text) {
            let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
            if (13..=19).contains(&digits.len()) && luhn(&digits) {
                out.push(Finding { rule: "card number".into(), masked: mask(&digits) });
            }
        }
    }
    for (name, re) in &rules.patterns {
        for m in re.find_iter(text) {
            out.push(Finding { rule: name.clone(), masked: mask(m.as_str()) });
        }
    }
    out
}

/// Largest file scanned.
pub const MAX_FILE: u64 = 20 * 1024 * 1024;

/// The DLP service's handlers on `bot`: scan every message (hide and report
/// findings to `report_space`) and every text file uploaded (report findings:
/// the core hides messages, not files).
pub fn dlp_bot(bot: Bot, rules: Rules, report_space: String) -> Bot {
    let report_space = client::SpaceId::from(report_space);
    let rules = Arc::new(rules);
    let (file_rules, file_report) = (rules.clone(), report_space.clone());
    let bot = bot.on_file(move |ctx: Ctx| {
        let (rules, report_space) = (file_rules.clone(), file_report.clone());
        async move {
            let Some(file) = ctx.file.clone() else { return Ok(()) };
            let session = ctx.session();
            let info = session.file_info(&file).await?;
            if info.size > MAX_FILE {
                return Ok(());
            }
            let tmp = std::env::temp_dir().join(format!("custos-dlp-{}", uuid::Uuid::new_v4()));
            let got = session.download_to(&file, &tmp, false, &|_, _| {}).await;
            let bytes = got.map(|_| std::fs::read(&tmp));
            let _ = std::fs::remove_file(&tmp);
            let Some(text) = search::extract_text(&bytes??, None) else { return Ok(()) };
            let findings = scan(&rules, &text);
            if findings.is_empty() {
                return Ok(());
            }
            let what: Vec<String> = findings.iter().map(|f| format!("{} {}", f.rule, f.masked)).collect();
            let report = format!(
                "DLP: {} in space {} file {} from {}: reported (files are not hidden)",
                what.join(", "),
                ctx.space(),
                file,
                info.uploader
            );
            session.send(&report_space, &report).await?;
            Ok(())
        }
    });
    bot.on_message(move |ctx: Ctx| {
        let (rules, report_space) = (rules.clone(), report_space.clone());
        async move {
            // Its own reports are not scanned again.
            if *ctx.space() == report_space {
                return Ok(());
            }
            let findings = scan(&rules, &ctx.text);
            if findings.is_empty() {
                return Ok(());
            }
            let action = match ctx.hide().await {
                Ok(_) => "hidden".to_string(),
                Err(e) => format!("not hidden ({e})"),
            };
            let what: Vec<String> = findings.iter().map(|f| format!("{} {}", f.rule, f.masked)).collect();
            let report = format!(
                "DLP: {} in space {} message {} from {}: {}",
                what.join(", "),
                ctx.space(),
                ctx.message.id,
                ctx.sender(),
                action
            );
            ctx.session().send(&report_space, &report).await?;
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_numbers() {
        for ok in ["4242424242424242", "4111111111111111", "5555555555554444", "378282246310005", "79927398713"] {
            assert!(luhn(ok), "{ok}");
        }
        for bad in ["4242424242424241", "1234567812345678", "79927398710", ""] {
            assert!(!luhn(bad), "{bad}");
        }
    }

    #[test]
    fn scans_cards_with_separators_and_custom_patterns() {
        let rules = Rules::new(true, &["falcon=(?i)project\\s+falcon".into()]).unwrap();
        let f = scan(&rules, "pay with 4242 4242 4242 4242 or 4111-1111-1111-1111 please");
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], Finding { rule: "card number".into(), masked: "…4242".into() });
        assert_eq!(f[1].masked, "…1111");
        assert!(scan(&rules, "order 1234 5678 9012 3456 shipped").is_empty(), "not Luhn-valid");
        assert!(scan(&rules, "call 555 0100 now").is_empty(), "too short");
        assert!(scan(&rules, "42424242424242424242424242").is_empty(), "too long to be one card");
        let f = scan(&rules, "Project   Falcon launches");
        assert_eq!(f, [Finding { rule: "falcon".into(), masked: "…lcon".into() }]);
        let none = Rules::new(false, &[]).unwrap();
        assert!(scan(&none, "4242 4242 4242 4242").is_empty());
    }

    #[test]
    fn refuses_bad_patterns_and_survives_hostile_text() {
        assert!(Rules::new(true, &["noequals".into()]).is_err());
        assert!(Rules::new(true, &["=x".into()]).is_err());
        assert!(Rules::new(true, &["bad=(".into()]).is_err());
        // Classic catastrophic-backtracking input: the regex crate matches it in linear time.
        let rules = Rules::new(true, &["evil=(a+)+$".into()]).unwrap();
        let text = format!("{}!", "a".repeat(50_000));
        assert!(scan(&rules, &text).is_empty());
        // A multi-byte character at the scan limit does not panic.
        let long = "é".repeat(MAX_SCAN);
        let _ = scan(&rules, &long);
    }
}
