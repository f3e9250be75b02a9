//! How events are printed: NDJSON, a JSON array, a table, CSV, or OCSF
//! (docs/OCSF.md).

use std::io::Write;

use audit_core::query::FieldPath;
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::{json, Map, Value};

use crate::terminal::{for_terminal, terminal_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Ndjson,
    Json,
    Table,
    Csv,
    Ocsf,
}

/// The OCSF version the mapping follows.
pub const OCSF_VERSION: &str = "1.4.0";

/// OCSF API Activity `activity_id` from an event type's last word:
/// 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other.
pub fn activity_id(event_type: &str) -> u64 {
    let verb = event_type
        .rsplit(['.', ':', '/', '_', '-'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match verb.as_str() {
        "create" | "created" | "add" | "added" | "insert" | "inserted" | "register"
        | "registered" | "invite" | "invited" => 1,
        "read" | "get" | "list" | "listed" | "view" | "viewed" | "query" | "queried" | "lookup"
        | "search" | "export" | "exported" | "download" | "downloaded" => 2,
        "update" | "updated" | "change" | "changed" | "modify" | "modified" | "edit" | "edited"
        | "set" | "grant" | "granted" | "enable" | "enabled" | "disable" | "disabled"
        | "rename" | "renamed" | "rotate" | "rotated" => 3,
        "delete" | "deleted" | "remove" | "removed" | "revoke" | "revoked" | "destroy"
        | "destroyed" | "purge" | "purged" => 4,
        _ => 99,
    }
}

fn activity_name(id: u64) -> &'static str {
    match id {
        1 => "Create",
        2 => "Read",
        3 => "Update",
        4 => "Delete",
        _ => "Other",
    }
}

/// An event as an OCSF API Activity (class 6003) record.
pub fn ocsf(event: &Value) -> Value {
    let text = |name: &str| event.get(name).and_then(Value::as_str);
    let event_type = text("eventType").unwrap_or_default();
    let id = activity_id(event_type);
    let time = text("timestamp")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_millis());
    let mut user = Map::new();
    if let Some(uid) = text("userId") {
        user.insert("uid".into(), json!(uid));
    }
    if let Some(email) = text("userEmail") {
        user.insert("email_addr".into(), json!(email));
    }
    let mut actor = json!({ "app_name": text("serviceName") });
    if !user.is_empty() {
        actor["user"] = Value::Object(user);
    }
    // OCSF wants at least one way to name the source: its IP when the
    // event has one, else the service that reported it.
    let mut src_endpoint = Map::new();
    match text("ipAddress") {
        Some(ip) => src_endpoint.insert("ip".into(), json!(ip)),
        None => src_endpoint.insert("name".into(), json!(text("serviceName"))),
    };
    let mut record = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": id,
        "activity_name": activity_name(id),
        "type_uid": 600300 + id,
        "type_name": format!("API Activity: {}", activity_name(id)),
        "time": time,
        "severity_id": 1,
        "severity": "Informational",
        "metadata": {
            "version": OCSF_VERSION,
            "uid": text("cursor"),
            "product": {"name": "Audit Trail API", "vendor_name": "Audit Trail API"},
            "tenant_uid": text("accountId"),
            "log_name": text("serviceName"),
        },
        "actor": actor,
        "api": {
            "operation": event_type,
            "service": {"name": text("serviceName")},
        },
        "src_endpoint": Value::Object(src_endpoint),
    });
    if let Some(trace) = text("traceId") {
        record["api"]["request"] = json!({ "uid": trace });
    }
    if let Some(agent) = text("userAgent") {
        record["http_request"] = json!({ "user_agent": agent });
    }
    if let Some(message) = text("message") {
        record["message"] = json!(message);
    }
    // Everything without an OCSF home keeps its name under `unmapped`.
    let mapped = [
        "eventType",
        "timestamp",
        "userId",
        "userEmail",
        "serviceName",
        "ipAddress",
        "cursor",
        "accountId",
        "traceId",
        "userAgent",
        "message",
    ];
    let mut unmapped = Map::new();
    if let Some(fields) = event.as_object() {
        for (name, value) in fields {
            if !mapped.contains(&name.as_str()) && !value.is_null() {
                unmapped.insert(name.clone(), value.clone());
            }
        }
    }
    if !unmapped.is_empty() {
        record["unmapped"] = Value::Object(unmapped);
    }
    // OCSF leaves out what is unknown rather than writing null.
    strip_nulls(&mut record);
    record
}

fn strip_nulls(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        for v in map.values_mut() {
            strip_nulls(v);
        }
    }
}

/// Narrower than this, a terminal's reported width is taken for none.
const MIN_TABLE_WIDTH: u16 = 40;

/// The top-level columns of tables and CSV, in order.
pub const COLUMNS: &[&str] = &[
    "cursor",
    "timestamp",
    "serviceName",
    "eventType",
    "userId",
    "userEmail",
    "message",
    "ipAddress",
    "userAgent",
    "traceId",
    "occurredAt",
    "clientId",
    "messageId",
    "referenceId",
    "organizationId",
    "sandbox",
    "jwtId",
    "expiresAt",
    "accountId",
];

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Where a CSV column's cell comes from: a top-level field, or a
/// `data`/`indexedData` property named as metadata names it
/// (`data.user.role`, `data["k8s.pod"]`, `indexedData["team name"]`), read
/// by the same path reader queries use. Parsed once per export.
enum CsvColumn {
    TopLevel(String),
    /// The whole of `data` as compact JSON: what the property columns
    /// can't hold (a `data` that is a list or a string, paths deeper or
    /// more than metadata records) is never lost.
    WholeData,
    Path(Option<FieldPath>),
}

/// The export's column holding `data` whole, as JSON.
pub const WHOLE_DATA_COLUMN: &str = "data";

impl CsvColumn {
    fn new(name: &str) -> Self {
        if COLUMNS.contains(&name) {
            Self::TopLevel(name.to_string())
        } else if name == WHOLE_DATA_COLUMN {
            Self::WholeData
        } else {
            Self::Path(FieldPath::parse(name))
        }
    }

    fn cell(&self, event: &Value) -> String {
        match self {
            Self::TopLevel(name) => cell(event.get(name)),
            Self::WholeData => match event.get("data") {
                None | Some(Value::Null) => String::new(),
                Some(data) => data.to_string(),
            },
            Self::Path(path) => cell(path.as_ref().and_then(|p| p.value_in(event))),
        }
    }
}

/// The I/O error inside a CSV error, kind and all, so a closed pipe is
/// still a closed pipe to [`crate::client::Failure::stdout`].
fn csv_io(err: csv::Error) -> std::io::Error {
    match err.into_kind() {
        csv::ErrorKind::Io(err) => err,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

/// Writes events in one format. Streaming formats write as they go; the
/// JSON array and the table collect (they are for finite results).
pub struct Printer<W: Write> {
    format: Format,
    /// None when the CSV writer holds the output.
    out: Option<W>,
    table_rows: Vec<Vec<String>>,
    json_first: bool,
    csv: Option<csv::Writer<W>>,
    csv_columns: Vec<String>,
    csv_sources: Vec<CsvColumn>,
    /// A streamed CSV writes its header with its first row (or at the end).
    csv_header_pending: bool,
    /// JSON is written for a terminal ([`terminal_json`]).
    on_terminal: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(format: Format, out: W) -> Self {
        if format == Format::Csv {
            // Streamed (tail, query): the top-level columns, known before
            // the first row; `export` adds the tenant's data columns.
            return Self {
                format,
                out: None,
                table_rows: Vec::new(),
                json_first: true,
                csv: Some(csv::Writer::from_writer(out)),
                csv_columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
                csv_sources: COLUMNS.iter().map(|c| CsvColumn::new(c)).collect(),
                csv_header_pending: true,
                on_terminal: false,
            };
        }
        Self {
            format,
            out: Some(out),
            table_rows: Vec::new(),
            json_first: true,
            csv: None,
            csv_columns: Vec::new(),
            csv_sources: Vec::new(),
            csv_header_pending: false,
            on_terminal: false,
        }
    }

    /// The same printer, writing JSON for a terminal when `yes`.
    pub fn on_terminal(mut self, yes: bool) -> Self {
        self.on_terminal = yes;
        self
    }

    fn json(&self, value: &Value) -> String {
        if self.on_terminal {
            terminal_json(value, false)
        } else {
            value.to_string()
        }
    }

    /// The same printer, for output that goes on from an earlier run's: a
    /// streamed CSV writes no header (the run that began it wrote one).
    pub fn continuing(mut self) -> Self {
        self.csv_header_pending = false;
        self
    }

    /// CSV with these data columns after the top-level ones (a stable
    /// order: known before the first row, so the export streams).
    pub fn csv(out: W, data_columns: Vec<String>, header: bool) -> std::io::Result<Self> {
        let mut columns: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        columns.extend(data_columns);
        let mut writer = csv::Writer::from_writer(out);
        if header {
            writer.write_record(&columns)?;
        }
        Ok(Self {
            format: Format::Csv,
            out: None,
            table_rows: Vec::new(),
            json_first: true,
            csv: Some(writer),
            csv_sources: columns.iter().map(|c| CsvColumn::new(c)).collect(),
            csv_columns: columns,
            csv_header_pending: false,
            on_terminal: false,
        })
    }

    pub fn write(&mut self, event: &Value) -> std::io::Result<()> {
        let first = std::mem::replace(&mut self.json_first, false);
        let text = match self.format {
            Format::Ndjson | Format::Json => self.json(event),
            Format::Ocsf => self.json(&ocsf(event)),
            _ => String::new(),
        };
        match (self.format, &mut self.out) {
            (Format::Ndjson | Format::Ocsf, Some(out)) => writeln!(out, "{text}"),
            (Format::Json, Some(out)) => {
                let separator = if first { "[\n" } else { ",\n" };
                write!(out, "{separator}{text}")
            }
            (Format::Table, _) => {
                self.table_rows.push(
                    [
                        "timestamp",
                        "serviceName",
                        "eventType",
                        "userId",
                        "message",
                        "cursor",
                    ]
                    .iter()
                    .map(|c| for_terminal(&cell(event.get(*c))).into_owned())
                    .collect(),
                );
                Ok(())
            }
            (Format::Csv, _) => {
                if first && self.out.is_none() && self.csv_header_pending {
                    if let Some(writer) = &mut self.csv {
                        writer.write_record(&self.csv_columns).map_err(csv_io)?;
                    }
                }
                // On a terminal a cell is shown, so what could control the
                // terminal is escaped as in every other format; a file or a
                // pipe gets the values as they are.
                let on_terminal = self.on_terminal;
                let row: Vec<String> = self
                    .csv_sources
                    .iter()
                    .map(|column| column.cell(event))
                    .map(|cell| match on_terminal {
                        true => for_terminal(&cell).into_owned(),
                        false => cell,
                    })
                    .collect();
                match &mut self.csv {
                    Some(writer) => writer.write_record(&row).map_err(csv_io),
                    None => Ok(()),
                }
            }
            (_, None) => Ok(()),
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        if let Some(writer) = &mut self.csv {
            writer.flush()?;
        }
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    /// Ends the output (closes the JSON array, draws the table).
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.csv_header_pending && self.json_first {
            // No row came: the header alone.
            if let Some(writer) = &mut self.csv {
                writer.write_record(&self.csv_columns).map_err(csv_io)?;
            }
        }
        match (self.format, &mut self.out) {
            (Format::Json, Some(out)) => {
                if self.json_first {
                    writeln!(out, "[]")?;
                } else {
                    writeln!(out, "\n]")?;
                }
            }
            (Format::Table, Some(out)) => {
                let mut table = Table::new();
                table
                    .load_preset(UTF8_FULL_CONDENSED)
                    .set_content_arrangement(ContentArrangement::Dynamic)
                    .set_header(["time", "service", "event type", "user", "message", "cursor"]);
                for row in &self.table_rows {
                    table.add_row(row);
                }
                // A terminal that reports no usable width (`stty cols 0`)
                // would squeeze every column to a character: lay the table
                // out at its natural width instead.
                if table.width().is_none_or(|width| width < MIN_TABLE_WIDTH) {
                    table.set_content_arrangement(ContentArrangement::Disabled);
                }
                writeln!(out, "{table}")?;
            }
            _ => {}
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of the field table is a column, but the JSON ones
    /// (`data`, `indexedData`: columns of paths into them, or `data` whole)
    /// and `mayHaveMoreData` (the CLI fetches such events whole).
    #[test]
    fn the_columns_are_the_field_table() {
        let columns: std::collections::BTreeSet<&str> = COLUMNS.iter().copied().collect();
        let fields: std::collections::BTreeSet<&str> = audit_core::event::EVENT_FIELDS
            .iter()
            .map(|f| f.name)
            .filter(|name| !["data", "indexedData", "mayHaveMoreData"].contains(name))
            .collect();
        assert_eq!(columns, fields);
        assert_eq!(columns.len(), COLUMNS.len(), "no column twice");
    }
}
