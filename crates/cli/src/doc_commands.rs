//! Every command the README and `docs/` show is one that works: each line of
//! a `sh` block that runs `custos` (directly or through `cargo run -p
//! custos-cli --`) is parsed by the real command line, so a renamed command
//! or flag fails here rather than in a reader's terminal. Other programs'
//! lines are checked as far as they are ours: scripts exist, `-p` names a
//! package of the workspace.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::Cli;

/// The repository's root (this crate is `crates/cli`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The documents checked: the README and every Markdown file under `docs/`.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// One command shown in a document, with where it was shown.
#[derive(Debug)]
struct Shown {
    doc: String,
    line: usize,
    text: String,
}

/// The command lines of a document's `sh` blocks: comments dropped,
/// continuation lines joined.
fn commands(doc: &str, name: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending: Option<Shown> = None;
    for (i, raw) in doc.lines().enumerate() {
        let trimmed = raw.trim_start();
        if let Some(fence) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && (fence == "sh" || fence == "bash" || fence == "shell");
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = strip_comment(trimmed);
        let (body, continues) = match line.trim_end().strip_suffix('\\') {
            Some(b) => (b.to_string(), true),
            None => (line.trim_end().to_string(), false),
        };
        match pending.as_mut() {
            Some(p) => {
                p.text.push(' ');
                p.text.push_str(body.trim());
            }
            None if !body.trim().is_empty() => {
                pending = Some(Shown { doc: name.to_string(), line: i + 1, text: body.trim().to_string() })
            }
            None => {}
        }
        if !continues {
            out.extend(pending.take());
        }
    }
    assert!(!in_sh, "{name}: a ```sh block is not closed");
    out
}

/// A line without its trailing `# comment` (a `#` outside quotes, at the
/// start or after whitespace).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// The packages of the workspace, by name.
fn packages() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/ exists") {
        let manifest = entry.expect("crates/ is readable").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let name = text
            .lines()
            .skip_while(|l| l.trim() != "[package]")
            .find_map(|l| l.trim().strip_prefix("name = ").map(|n| n.trim_matches('"').to_string()));
        out.extend(name);
    }
    out
}

/// Checks one shown command; `Err` says what is wrong with it.
fn check(words: &[String], packages: &[String]) -> Result<(), String> {
    let Some(first) = words.first() else { return Ok(()) };
    // A pipeline or redirect: check the first command only.
    let end = words.iter().position(|w| matches!(w.as_str(), "|" | ">" | ">>" | "<" | "&&")).unwrap_or(words.len());
    let words = &words[..end];
    match first.as_str() {
        "custos" => parse(words),
        "cargo" if words.get(1).is_some_and(|w| w == "run") => {
            let package = words.windows(2).find(|w| w[0] == "-p").map(|w| w[1].clone());
            if package.as_deref() != Some("custos-cli") {
                return Err("a `cargo run` that is not `-p custos-cli`".into());
            }
            let Some(dashes) = words.iter().position(|w| w == "--") else {
                return Err("`cargo run` without `--` before the command".into());
            };
            let mut args = vec!["custos".to_string()];
            args.extend_from_slice(&words[dashes + 1..]);
            parse(&args)
        }
        "cargo" => match words.windows(2).find(|w| w[0] == "-p") {
            Some(w) if !packages.contains(&w[1]) => Err(format!("no package `{}` in the workspace", w[1])),
            _ => Ok(()),
        },
        script if script.starts_with("scripts/") => {
            if root().join(script).is_file() {
                Ok(())
            } else {
                Err(format!("no script {script}"))
            }
        }
        _ => Ok(()),
    }
}

fn parse(args: &[String]) -> Result<(), String> {
    Cli::try_parse_from(args).map(drop).map_err(|e| e.render().to_string())
}

#[test]
fn every_command_in_the_docs_parses() {
    let packages = packages();
    assert!(packages.iter().any(|p| p == "custos-cli"), "the workspace's packages were not found: {packages:?}");
    let mut shown = 0;
    let mut custos = 0;
    let mut problems = Vec::new();
    for path in documents() {
        let name = path.strip_prefix(root()).unwrap_or(&path).display().to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for cmd in commands(&text, &name) {
            shown += 1;
            let words = shlex::split(&cmd.text)
                .unwrap_or_else(|| panic!("{}:{}: unbalanced quotes: {}", cmd.doc, cmd.line, cmd.text));
            if words.first().is_some_and(|w| w == "custos") || cmd.text.contains("-p custos-cli --") {
                custos += 1;
            }
            if let Err(why) = check(&words, &packages) {
                problems.push(format!("{}:{}: {}\n  {}", cmd.doc, cmd.line, cmd.text, why.trim()));
            }
        }
    }
    assert!(problems.is_empty(), "commands in the docs that do not parse:\n{}", problems.join("\n"));
    // The scan itself must have found the docs' commands (a broken fence
    // parser would pass trivially).
    assert!(custos >= 40, "only {custos} custos commands found in {shown} shown");
}

#[test]
fn the_checks_catch_what_they_should() {
    let packages = packages();
    let w = |s: &str| shlex::split(s).unwrap();
    assert!(check(&w("custos space create \"Launch plans\" --member bob@acme.test"), &packages).is_ok());
    assert!(check(&w("custos space create x --no-such-flag"), &packages).is_err());
    assert!(check(&w("custos no-such-command"), &packages).is_err());
    assert!(check(&w("cargo run --release -p custos-cli -- up"), &packages).is_ok());
    assert!(check(&w("cargo run --release -p custos-cli -- upp"), &packages).is_err());
    assert!(check(&w("cargo test -p no-such-crate"), &packages).is_err());
    assert!(check(&w("scripts/no-such-script"), &packages).is_err());
    assert!(check(&w("custos kms example-config > kms.toml"), &packages).is_ok());
    let doc = "text\n```sh\ncustos send <space> \"a # b\"   # comment\ncustos kms admin federation allow a \\\n    --org b\n```\n```rust\ncustos nonsense\n```\n";
    let found: Vec<String> = commands(doc, "t").into_iter().map(|c| c.text).collect();
    assert_eq!(found, ["custos send <space> \"a # b\"", "custos kms admin federation allow a --org b"]);
}

/// A path with `.` and `..` resolved by name (the target may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn links_between_the_docs_resolve() {
    let root = root().canonicalize().expect("the repository root");
    let mut checked = 0;
    let mut broken = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let here = path.canonicalize().expect("a document's path");
        let dir = here.parent().expect("a document has a directory");
        for target in text.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() { here.clone() } else { normalize(&dir.join(file)) };
            // Links that leave the repository (../shared/docs) are not ours to check.
            if !file.starts_with(&root) {
                continue;
            }
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", path.display()));
                continue;
            }
            checked += 1;
            if !fragment.is_empty() {
                let body = std::fs::read_to_string(&file).unwrap_or_default();
                let found =
                    body.lines().filter(|l| l.starts_with('#')).any(|l| anchor(l.trim_start_matches('#')) == fragment);
                if !found {
                    broken.push(format!("{}: {target}: no heading with that anchor", path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 20, "only {checked} links checked");
    assert_eq!(anchor("Bots (`crates/bots`)"), "bots-cratesbots");
}
