//! # testkit: real peers for tests
//!
//! [`Node`] drives `interop/driver.js` (node-kms 0.4.1 and node-jose 2.2.0,
//! unmodified); [`Idp`] runs `interop/idp.js` (npm `oauth2-mock-server`), a
//! real OpenID provider on loopback.
//!
//! These tests never skip: a missing Node.js or missing npm packages fail them,
//! with the command that fixes it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// The interop driver process.
pub struct Node {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The `interop/` directory of the workspace.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

impl Node {
    /// Starts the driver; panics (never skips) if Node.js or the npm packages are missing.
    pub fn start() -> Node {
        let dir = interop_dir();
        for pkg in ["node-kms", "node-jose"] {
            assert!(
                dir.join("node_modules").join(pkg).join("package.json").exists(),
                "interop/node_modules/{pkg} is missing: run `npm ci --prefix interop` (scripts/test does)"
            );
        }
        let mut child = Command::new("node")
            .arg(dir.join("driver.js"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("Node.js must be installed to run the interop tests (`node` on PATH)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Node { child, stdin, stdout }
    }

    /// Runs one command; `Err(message)` when node-kms/node-jose threw.
    pub fn try_call(&mut self, cmd: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("driver answers");
        assert!(!line.is_empty(), "interop driver exited");
        let mut v: Value = serde_json::from_str(&line).expect("driver speaks JSON");
        match v.get("err") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
            None => Ok(v["ok"].take()),
        }
    }

    /// Runs one command; panics when node-kms/node-jose threw.
    pub fn call(&mut self, cmd: Value) -> Value {
        let op = cmd["op"].clone();
        self.try_call(cmd).unwrap_or_else(|e| panic!("node op {op} failed: {e}"))
    }

    /// Generates a key with node-jose.
    pub fn generate(&mut self, kty: &str, size_or_crv: Value, kid: &str) -> Value {
        let mut cmd = json!({"op": "generate", "kty": kty, "kid": kid});
        if kty == "EC" {
            cmd["crv"] = size_or_crv;
        } else {
            cmd["size"] = size_or_crv;
        }
        self.call(cmd)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (for the driver's `Buffer.from(.., "base64")`).
pub fn b64(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    // Standard base64 for the driver's Buffer.from(.., "base64").
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    let _ = write!(s, "");
    s
}

/// Decodes standard or URL-safe base64, padded or not.
pub fn unb64(s: &str) -> Vec<u8> {
    let s = s.trim_end_matches('=');
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            _ => 63,
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A real OpenID provider (`interop/idp.js`); killed when dropped.
pub struct Idp {
    child: Child,
    /// Its issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    /// Its token endpoint.
    pub token_endpoint: String,
}

impl Idp {
    /// Starts it on a free port; panics (never skips) if Node.js or the npm package is missing.
    pub fn start() -> Idp {
        let dir = interop_dir();
        assert!(
            dir.join("node_modules/oauth2-mock-server/package.json").is_file(),
            "npm package oauth2-mock-server is missing: run `npm ci --prefix interop` (scripts/test does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("idp.js"))
            .arg("0")
            // idp.js exits when this pipe closes, so it cannot outlive the test.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("Node.js must be installed to run the interop tests (`node` on PATH)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("idp.js reports its address");
        let info: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("idp.js printed {line:?} instead of its address"));
        Idp {
            child,
            issuer: info["issuer"].as_str().expect("issuer").to_string(),
            token_endpoint: info["token_endpoint"].as_str().expect("token_endpoint").to_string(),
        }
    }
}

impl Idp {
    /// An access token from the token endpoint (client_credentials; `client_id`
    /// `custos-web` unless `form` names one). See `interop/idp.js` for the fields.
    pub async fn token(&self, form: &[(&str, &str)]) -> String {
        let mut fields = vec![("grant_type", "client_credentials")];
        if !form.iter().any(|(k, _)| *k == "client_id") {
            fields.push(("client_id", "custos-web"));
        }
        fields.extend_from_slice(form);
        let response: Value = reqwest::Client::new()
            .post(&self.token_endpoint)
            .form(&fields)
            .send()
            .await
            .expect("the IdP answers")
            .error_for_status()
            .expect("the IdP issues a token")
            .json()
            .await
            .expect("a JSON token response");
        response["access_token"].as_str().expect("access_token").to_owned()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway PostgreSQL database for tests that need one of their own.
pub mod pg {
    use sqlx::{AssertSqlSafe, Connection, PgConnection};

    /// `CUSTOS_TEST_POSTGRES_URL`, default `postgres://127.0.0.1:5432/test`.
    pub fn admin_url() -> String {
        std::env::var("CUSTOS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://127.0.0.1:5432/test".into())
    }

    /// A database created for one test and dropped when this goes out of scope.
    pub struct TempDatabase {
        /// Its URL.
        pub url: String,
        name: String,
    }

    impl TempDatabase {
        /// Creates `custos_<tag>_<pid>`. `None` (after printing `SKIPPED … <test>`)
        /// when PostgreSQL is unreachable; under CI (`CI` set) that is a failure instead.
        pub fn create(tag: &str, test: &str) -> Option<TempDatabase> {
            let admin = admin_url();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let Ok(mut conn) = rt.block_on(PgConnection::connect(&admin)) else {
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL is required under CI at {admin}");
                }
                eprintln!("SKIPPED (no PostgreSQL at {admin}): {test}");
                return None;
            };
            let name = format!("custos_{tag}_{}", std::process::id());
            rt.block_on(async {
                let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await;
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
            });
            let (base, _) = admin.rsplit_once('/').expect("URL with a database");
            Some(TempDatabase { url: format!("{base}/{name}"), name })
        }
    }

    impl Drop for TempDatabase {
        fn drop(&mut self) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
                        .execute(&mut conn)
                        .await;
                }
            });
        }
    }
}
