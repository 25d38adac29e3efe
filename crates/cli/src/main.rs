//! `custos`: one binary for the servers, the client commands and `up`.
//!
//! Only the library layer (JOSE and the KMS protocol) exists so far; the
//! commands below say so plainly instead of pretending.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "custos", version, about = "Custos: end-to-end encrypted team messaging with enterprise-held keys")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an all-in-one local deployment (KMS, core, development identity provider).
    Up,
    /// The enterprise Key Management Server.
    Kms,
    /// The messaging core.
    Core,
}

fn not_built(what: &str, issue: &str) -> ExitCode {
    eprintln!(
        "custos: {what} is not built yet. This release contains the protocol libraries only \
         (crates/jose, crates/kms-protocol); see README.md, \"Status\", and {issue}."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Up => not_built("`custos up` (the all-in-one deployment)", "issues 3, 4 and 5"),
        Command::Kms => not_built("the KMS server", "issue 3"),
        Command::Core => not_built("the messaging core", "issue 4"),
    }
}
