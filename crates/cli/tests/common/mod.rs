//! What the CLI's end-to-end tests share: a spawned `custos up` on free
//! loopback ports, and people at the command line, each with their own
//! config directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_custos");

/// Seven consecutive free loopback ports (what `custos up` takes).
pub fn free_base() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    for i in 0..200u64 {
        let base = 20000 + ((seed.wrapping_mul(6364136223846793005).wrapping_add(i * 7919)) % 40000) as u16;
        if (0..7).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok()) {
            return base;
        }
    }
    panic!("no seven free ports");
}

/// A running `custos up`.
pub struct Up {
    pub child: Child,
    pub data: PathBuf,
    pub base: u16,
    /// Its stderr.
    pub log: PathBuf,
    /// The `ready` document it printed.
    pub ready: Value,
}

impl Up {
    pub fn start(data: &Path, base: u16) -> Up {
        let log = data.with_extension("log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = Command::new(BIN)
            .args(["--json", "up", "--data-dir"])
            .arg(data)
            .args(["--base-port", &base.to_string()])
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            assert!(Instant::now() < deadline, "custos up did not become ready");
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("custos up exited: {:?}", child.wait());
            }
            if line.starts_with("{\"ready\"") {
                break serde_json::from_str::<Value>(&line).unwrap()["ready"].clone();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        Up { child, data: data.to_path_buf(), base, log, ready }
    }

    pub fn profile(&self, org: &str) -> PathBuf {
        self.data.join(format!("{org}.profile.toml"))
    }

    pub fn org(&self, domain: &str) -> Value {
        self.ready["orgs"].as_array().unwrap().iter().find(|o| o["domain"] == domain).unwrap().clone()
    }

    pub fn password(&self, user: &str) -> String {
        for o in self.ready["orgs"].as_array().unwrap() {
            for u in o["users"].as_array().unwrap() {
                if u[0] == user {
                    return u[1].as_str().unwrap().to_string();
                }
            }
        }
        panic!("no user {user}");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One person at the command line.
pub struct Person {
    pub dir: PathBuf,
}

impl Person {
    pub fn login(up: &Up, root: &Path, user: &str) -> Person {
        Self::login_with(up, &up.profile(user.split('@').nth(1).unwrap()), root, user)
    }

    pub fn login_with(up: &Up, profile: &Path, root: &Path, user: &str) -> Person {
        let dir = root.join(user);
        let mut child = Command::new(BIN)
            .args(["--json", "--config-dir"])
            .arg(&dir)
            .args(["login", "--org"])
            .arg(profile)
            .args(["--user", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(up.password(user).as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "login {user}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["user"], user);
        Person { dir }
    }

    /// `custos --json --config-dir <dir>`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--json", "--config-dir"]).arg(&self.dir);
        c
    }

    /// Runs, with or without `--json`.
    pub fn run_with(&self, json: bool, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        if json {
            c.arg("--json");
        }
        c.arg("--config-dir").arg(&self.dir).args(args).output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(true, args)
    }

    /// Runs and expects success; the JSON it printed.
    pub fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "custos {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("custos {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Runs and expects failure; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "custos {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The texts of a space's messages, oldest first.
    pub fn texts(&self, space: &str) -> Vec<String> {
        let v = self.ok(&["read", space, "--limit", "200"]);
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "message")
            .map(|e| e["text"].as_str().unwrap().to_string())
            .collect()
    }

    /// `tail --count n` in the background, once it is following.
    pub fn tail(&self, space: &str, n: usize) -> Child {
        let mut child = self
            .cmd()
            .args(["tail", space, "--count", &n.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("following"), "tail did not start: {line}");
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            if !rest.trim().is_empty() {
                eprintln!("tail stderr: {rest}");
            }
        });
        child
    }
}

/// `custos bot <kind>` as its own process, for acme's service `bots[index]` of `up`.
pub struct BotProcess {
    pub child: Child,
    /// The JSON line it printed on starting.
    pub first_line: Value,
    /// Everything it printed to stderr since.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl BotProcess {
    pub fn start(up: &Up, kind: &str, index: usize, extra: &[&str]) -> BotProcess {
        let secret = up.org("acme.test")["bots"][index][1].as_str().unwrap().to_string();
        let mut child = Command::new(BIN)
            .args(["bot", kind, "--org"])
            .arg(up.profile("acme.test"))
            .args(extra)
            .env("CUSTOS_BOT_SECRET", secret)
            .env("CUSTOS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let first_line: Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("the bot did not start: {line}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                l.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        BotProcess { child, first_line, log }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
