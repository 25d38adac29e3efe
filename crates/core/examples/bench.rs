//! Runs the core's load tool (`custos_core::bench`) until `custos core bench` exists:
//!
//! ```text
//! cargo run --release -p core --example bench -- --clients 1000 --spaces 50 --seconds 5 \
//!     [--rate MSGS_PER_S] [--database-url postgres://127.0.0.1:5432/test]
//! ```

use custos_core::bench::{run, BenchOptions};

fn main() -> anyhow::Result<()> {
    let mut opts = BenchOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => opts.clients = value()?.parse()?,
            "--spaces" => opts.spaces = value()?.parse()?,
            "--seconds" => opts.seconds = value()?.parse()?,
            "--rate" => opts.rate = Some(value()?.parse()?),
            "--database-url" => opts.database_url = Some(value()?),
            other => anyhow::bail!("unknown argument {other} (see the comment at the top of examples/bench.rs)"),
        }
    }
    run(opts)
}
