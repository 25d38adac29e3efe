//! How commands print: human text by default, one JSON document (or JSON
//! lines for streams) with `--json`; text from others made safe for a
//! terminal or a file name first.
//!
//! - [`text`]: terminal- and file-name-safe renderings of others' text;
//! - [`message`]: one decrypted event as a JSON object or a line of text.

pub mod message;
pub mod text;

use serde_json::Value;

/// Output mode.
#[derive(Clone, Copy)]
pub struct Out {
    /// JSON instead of human text.
    pub json: bool,
}

impl Out {
    /// Prints `v` (with `--json`) or the human text.
    pub(crate) fn print(&self, human: impl FnOnce() -> String, v: Value) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", human());
        }
    }
}
