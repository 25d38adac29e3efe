//! `custos`: one binary for the servers, the client commands and `up`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit_cmd;
mod bench;
mod bot_cmd;
mod client_cmd;
mod compliance_cmd;
mod demo;
#[cfg(test)]
mod doc_commands;
mod kms_admin;
mod output;
mod profile;
mod session;
mod up;
mod web_host;

#[derive(Parser)]
#[command(name = "custos", version, about = "Custos: end-to-end encrypted team messaging with enterprise-held keys")]
struct Cli {
    /// The client's configuration directory (default: $CUSTOS_CONFIG_DIR, else the user's config directory + /custos).
    #[arg(long, global = true)]
    config_dir: Option<PathBuf>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an all-in-one local deployment: two organizations (acme.test,
    /// globex.test), each with a development identity provider and a KMS,
    /// and one core. Data is kept for the next `up`.
    Up {
        /// Where everything is kept (default: $CUSTOS_UP_DIR, else the user's data directory + /custos/up).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// First of seven consecutive loopback ports (core, acme IdP, acme KMS, globex IdP, globex KMS, acme web client, globex web client).
        #[arg(long, default_value_t = 8400)]
        base_port: u16,
        /// Also run the scripted demo once everything is up.
        #[arg(long)]
        demo: bool,
    },
    /// Start the local deployment, run a scripted conversation that shows
    /// what the provider stores and what a removed member can read, and stop.
    Demo {
        /// Where everything is kept (as for `up`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// First of seven consecutive loopback ports.
        #[arg(long, default_value_t = 8400)]
        base_port: u16,
    },
    /// The development identity provider (OIDC; for development only).
    Idp {
        #[command(subcommand)]
        command: IdpCommand,
    },
    /// Check a KMS audit log export offline.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The client SDK's own tools.
    Sdk {
        #[command(subcommand)]
        command: SdkCommand,
    },
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
    /// Compliance officers: cases at the KMS, decrypted exports of a space
    /// with a manifest of hashes, and checking an export.
    Compliance {
        #[command(subcommand)]
        command: compliance_cmd::ComplianceCommand,
    },
    /// The enterprise Key Management Server.
    Kms {
        #[command(subcommand)]
        command: KmsCommand,
    },
    /// The messaging core.
    Core {
        #[command(subcommand)]
        command: CoreCommand,
    },
    /// Bots (the example poll bot).
    Bot {
        #[command(subcommand)]
        command: bot_cmd::BotCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify an export (`custos kms audit-export`): every entry's hash, the
    /// chain, every checkpoint's signature and the closing seal. Exit status 1
    /// and the first problem (line, seq, what) when anything was altered,
    /// removed, reordered or cut.
    Verify {
        /// The export (JSON lines).
        log: PathBuf,
        /// The KMS public key (PEM, JWK, or the JSON of GET /kms/info); repeat across a key rotation.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Accept an export that starts mid-log without a checkpoint anchoring its first entry.
        #[arg(long)]
        allow_partial: bool,
    },
}

#[derive(Subcommand)]
enum SdkCommand {
    /// Search at scale: generates synthetic messages, indexes them (blinded
    /// tokens into the core's store) and measures indexing throughput and
    /// query latency (run outside CI; default one million messages).
    SearchBench {
        /// Messages to generate and index.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Queries to time.
        #[arg(long, default_value_t = 2_000)]
        queries: u64,
        /// `sqlite://…` or `postgres://…` (default: SQLite in a temporary directory).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Load: senders and live receivers through the SDK on an in-process
    /// `up` deployment; send-to-decrypted-at-receiver latency p50/p99 with
    /// warm key caches.
    Bench {
        /// Spaces (one sender, two receivers each).
        #[arg(long, default_value_t = 10)]
        spaces: usize,
        /// Offered messages per second, over all spaces.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

#[derive(Subcommand)]
enum IdpCommand {
    /// Serve it (discovery, JWKS, token endpoint, device login).
    Serve {
        /// The TOML configuration (see crates/idp/idp.example.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a commented example configuration.
    ExampleConfig,
}

#[derive(Subcommand)]
enum CoreCommand {
    /// Serve the core (HTTP and WebSocket; OpenAPI at /openapi.json).
    Serve {
        /// The TOML configuration (see crates/core/core.example.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a commented example configuration.
    ExampleConfig,
    /// Load: N WebSocket clients in M spaces; messages/s accepted and
    /// delivered, send-to-deliver latency p50/p99.
    Bench {
        /// Connected clients (one WebSocket each).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Spaces the clients are spread over.
        #[arg(long, default_value_t = 50)]
        spaces: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// A fixed offered load (messages/s) instead of saturation then half of it.
        #[arg(long)]
        rate: Option<f64>,
        /// Database URL (default: a temporary SQLite file).
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum KmsCommand {
    /// Serve the KMS (HTTP and WebSocket).
    Serve {
        /// The TOML configuration (see crates/kms/kms.example.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a commented example configuration.
    ExampleConfig,
    /// Org policy, as an org admin (log in first): services, revocation,
    /// disabled users and devices, compliance officers, approval, retention, holds.
    Admin {
        #[command(subcommand)]
        command: kms_admin::AdminCommand,
    },
    /// Rotate the static key with an overlap: `stage` a next key (served
    /// beside the current one from the next start), `promote` it (the old
    /// one stays served as previous), `retire` the previous one.
    StaticKey {
        /// stage | promote | retire.
        #[arg(value_parser = ["stage", "promote", "retire"])]
        action: String,
        /// The KMS's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Export the audit log as JSON lines (for a SIEM, or `custos audit
    /// verify`), ending with a seal signed by the KMS key. Run where the KMS
    /// runs (it needs the CMK passphrase).
    AuditExport {
        /// The KMS's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// First entry to export.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure handshakes, key retrieval, key creation and binding, in-process
    /// and over HTTP, next to `openssl speed rsa2048` from the same run.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Keys per create request.
        #[arg(long, default_value_t = 10)]
        keys_per_request: u32,
        /// Database URL (default: a temporary SQLite file).
        #[arg(long)]
        database_url: Option<String>,
        /// Only the in-process figures.
        #[arg(long)]
        in_process_only: bool,
        /// For comparison only: the engine without its audit log (to show
        /// what auditing costs; production always audits).
        #[arg(long)]
        no_audit: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers log their progress; client commands only problems.
    let default_level = if matches!(
        cli.command,
        Command::Client(_) | Command::Compliance { .. } | Command::Kms { command: KmsCommand::Admin { .. } }
    ) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG").unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Up { data_dir, base_port, demo } => {
            up::run(up::UpOptions { data_dir, base_port, json: cli.json, demo, exit_after_demo: false })
        }
        Command::Demo { data_dir, base_port } => {
            up::run(up::UpOptions { data_dir, base_port, json: cli.json, demo: true, exit_after_demo: true })
        }
        Command::Idp { command: IdpCommand::ExampleConfig } => {
            print!("{}", include_str!("../../idp/idp.example.toml"));
            Ok(())
        }
        Command::Idp { command: IdpCommand::Serve { config } } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(async move {
                let cfg = idp::Config::load(&config)?;
                idp::serve(cfg).await
            })
        }
        Command::Audit { command: AuditCommand::Verify { log, keys, allow_partial } } => {
            match audit_cmd::verify(&log, &keys, allow_partial, cli.json) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Command::Kms { command: KmsCommand::AuditExport { config, from, out } } => {
            audit_cmd::export(&config, from, out.as_deref())
        }
        Command::Sdk { command: SdkCommand::SearchBench { messages, queries, database_url } } => {
            bench::search::run(bench::search::Options { messages, queries, database_url })
        }
        Command::Sdk { command: SdkCommand::Bench { spaces, rate, seconds } } => {
            bench::sdk::run(bench::sdk::BenchOptions { spaces, rate, seconds })
        }
        Command::Bot { command } => bot_cmd::run(command),
        Command::Client(cmd) => client_cmd::run(cmd, cli.config_dir.as_deref(), output::Out { json: cli.json }),
        Command::Compliance { command } => {
            match compliance_cmd::run(command, cli.config_dir.as_deref(), output::Out { json: cli.json }) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Command::Core { command: CoreCommand::Bench { clients, spaces, seconds, rate, database_url } } => {
            bench::core::run(bench::core::BenchOptions { clients, spaces, seconds, rate, database_url })
        }
        Command::Core { command: CoreCommand::ExampleConfig } => {
            print!("{}", include_str!("../../core/core.example.toml"));
            Ok(())
        }
        Command::Core { command: CoreCommand::Serve { config } } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(async move {
                let cfg = custos_core::config::Config::load(&config)?;
                custos_core::server::serve(cfg).await
            })
        }
        Command::Kms { command: KmsCommand::Admin { command } } => {
            kms_admin::run(command, cli.config_dir.as_deref(), output::Out { json: cli.json })
        }
        Command::Kms { command: KmsCommand::StaticKey { action, config } } => audit_cmd::static_key(&config, &action),
        Command::Kms { command: KmsCommand::ExampleConfig } => {
            print!("{}", include_str!("../../kms/kms.example.toml"));
            Ok(())
        }
        Command::Kms {
            command: KmsCommand::Bench { seconds, clients, keys_per_request, database_url, in_process_only, no_audit },
        } => bench::kms::run(bench::kms::BenchOptions {
            seconds,
            clients,
            keys_per_request,
            database_url,
            in_process_only,
            no_audit,
        }),
        Command::Kms { command: KmsCommand::Serve { config } } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(async move {
                let cfg = kms::config::Config::load(&config)?;
                kms::server::serve(cfg).await
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
