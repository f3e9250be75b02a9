//! The human outputs, held to snapshots with fixed data.

use audit_cli::format::{ocsf, Format, Printer};
use audit_cli::metadata_tree;
use serde_json::json;

fn events() -> Vec<serde_json::Value> {
    vec![
        json!({"cursor": "01KB0000000000000000000001", "accountId": "acme", "timestamp": "2026-11-27T09:00:00.000Z", "expiresAt": "2027-02-25T09:00:00.000Z", "serviceName": "idp", "eventType": "user.login", "userId": "u-1", "message": "signed in", "ipAddress": "203.0.113.7", "userAgent": "curl/8", "data": {"mfa": true, "geo": {"country": "FR"}}}),
        json!({"cursor": "01KB0000000000000000000002", "accountId": "acme", "timestamp": "2026-11-27T09:01:00.000Z", "expiresAt": "2027-02-25T09:01:00.000Z", "serviceName": "iam", "eventType": "role.revoked", "userId": "u-2", "traceId": "t-9"}),
    ]
}

fn render(format: Format) -> String {
    let mut out = Vec::new();
    let mut printer = Printer::new(format, &mut out);
    for event in events() {
        printer.write(&event).unwrap();
    }
    printer.finish().unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn the_table() {
    insta::assert_snapshot!(render(Format::Table));
}

#[test]
fn the_metadata_tree() {
    let metadata = json!({
        "services": [
            {"serviceName": "audit-api", "eventTypes": ["audit.list", "audit.lookup"]},
            {"serviceName": "idp", "eventTypes": ["user.login", "user.logout"]},
        ],
        "targets": [
            {"target": "event", "fields": [{"name": "userId", "type": "string", "operators": ["eq", "ne", "in"]}]},
            {"target": "data", "fields": [{"name": "data.mfa", "type": "boolean", "operators": ["eq", "ne", "exists"]}]},
        ],
    });
    insta::assert_snapshot!(metadata_tree(&metadata));
}

#[test]
fn the_ocsf_record() {
    insta::assert_json_snapshot!(ocsf(&events()[0]));
    // The activity from the event type's verb.
    assert_eq!(ocsf(&events()[1])["activity_id"], 4);
    assert_eq!(ocsf(&events()[1])["type_uid"], 600304);
}

#[test]
fn csv_flattens_data_by_dotted_path_in_a_stable_order() {
    let mut out = Vec::new();
    let mut printer = Printer::csv(
        &mut out,
        vec!["data.geo.country".into(), "data.mfa".into()],
        true,
    )
    .unwrap();
    for event in events() {
        printer.write(&event).unwrap();
    }
    printer.finish().unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "cursor");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][column("data.geo.country")], "FR");
    assert_eq!(&rows[0][column("data.mfa")], "true");
    assert_eq!(&rows[1][column("traceId")], "t-9");
    assert_eq!(&rows[1][column("data.mfa")], "");
}
