//! The `audit` command-line client: its commands as a library, so tests
//! can hold their output to snapshots.

pub mod client;
pub mod export;
pub mod format;
pub mod ingest;
pub mod query;
pub mod tail;
pub mod terminal;
pub mod trail;
pub mod verify;

use serde_json::Value;

use crate::terminal::for_terminal;

/// Writes a line to standard error. `eprintln!` panics when stderr is
/// closed (`audit … 2>&1 | head`); a message nobody can read is dropped.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A string of the metadata, as a terminal shows it safely.
fn shown(value: &Value) -> std::borrow::Cow<'_, str> {
    for_terminal(value.as_str().unwrap_or_default())
}

/// The metadata as a tree of services and event types, then properties.
pub fn metadata_tree(metadata: &Value) -> String {
    let mut out = String::new();
    let services = metadata["services"].as_array().cloned().unwrap_or_default();
    out.push_str("services\n");
    for (i, service) in services.iter().enumerate() {
        let last = i + 1 == services.len();
        out.push_str(&format!(
            "{} {}\n",
            if last { "└──" } else { "├──" },
            shown(&service["serviceName"])
        ));
        let types = service["eventTypes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (j, kind) in types.iter().enumerate() {
            out.push_str(&format!(
                "{}   {} {}\n",
                if last { " " } else { "│" },
                if j + 1 == types.len() {
                    "└──"
                } else {
                    "├──"
                },
                shown(kind)
            ));
        }
    }
    for target in metadata["targets"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!("{}\n", shown(&target["target"])));
        let fields = target["fields"].as_array().cloned().unwrap_or_default();
        for (i, field) in fields.iter().enumerate() {
            let operators: Vec<&str> = field["operators"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            out.push_str(&format!(
                "{} {} ({}): {}\n",
                if i + 1 == fields.len() {
                    "└──"
                } else {
                    "├──"
                },
                shown(&field["name"]),
                shown(&field["type"]),
                for_terminal(&operators.join(" "))
            ));
        }
    }
    out
}

/// Holds an exclusive lock on `file` (at `path`) for as long as the file is
/// kept open: one run at a time goes on with a state or an export file.
/// Two tails sharing a state wrote every event twice, and two exports
/// appending to one file interleaved their records. A file system without
/// locks (some network mounts) is used unlocked, with a warning.
pub fn hold_exclusively(
    file: &std::fs::File,
    path: &std::path::Path,
) -> Result<(), client::Failure> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(client::Failure::new(
            client::EXIT_USAGE,
            format!(
                "{}: another `audit` run is going on with it; one at a time",
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(err)) => {
            say(&format!(
                "audit: {} cannot be locked ({err}): make sure no other run uses it",
                path.display()
            ));
            Ok(())
        }
    }
}
