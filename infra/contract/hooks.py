"""schemathesis hooks for the contract run (infra/test.sh).

openapi.yaml can't express rules that tie one part of a request to another.
GET /audit/proofs/consistency has one: `from` may not exceed `to` (two real
trees in the wrong order are refused with 400; docs/INTEGRITY.md). For cases
generated as valid, the two are put in order. POST /audit/events has two
(README "Ingest rules and decisions"):
- the Idempotency-Key header applies to a single event only, and
- when a single event also carries `messageId`, the two must agree.
A schema-valid request that breaks one is refused with 400, rightly. So for
cases that schemathesis generated as valid, the header is dropped where it
would break a rule: the case stays valid by the schema and by these rules,
and everything else about it is tested as generated. infra/tests/ingest.rs
covers both rules.

Negative cases are sent as generated, but for one rule: a batch is answered
per event (README: "a batch is not atomic"), so a batch where the schema
breaks in some events but not others is rightly answered 207, storing the
valid ones. Such a batch is sent with its invalid events only, which must
all be refused (400), as the check for schema-violating requests expects.
"""

import pathlib

import jsonschema_rs
import schemathesis
import yaml

_SPEC = yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())
_NEW_EVENT = jsonschema_rs.Draft202012Validator(
    {"$ref": "#/components/schemas/NewEvent", "components": _SPEC["components"]}
)


def is_negative(case):
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_negative


def order_consistency_sizes(case):
    query = case.query or {}
    low, high = query.get("from"), query.get("to")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        query["from"], query["to"] = high, low


def keep_only_invalid_events(case):
    events = case.body.get("events") if isinstance(case.body, dict) else None
    if not isinstance(events, list):
        return
    invalid = [event for event in events if not _NEW_EVENT.is_valid(event)]
    if invalid and len(invalid) < len(events):
        case.body["events"] = invalid


@schemathesis.hook
def before_call(context, case, **kwargs):
    if is_negative(case):
        if case.operation.method.upper() == "POST" and case.operation.path == "/audit/events":
            keep_only_invalid_events(case)
        return
    if case.operation.method.upper() == "GET" and case.operation.path == "/audit/proofs/consistency":
        order_consistency_sizes(case)
        return
    if case.operation.method.upper() != "POST" or case.operation.path != "/audit/events":
        return
    headers = case.headers or {}
    key = next((name for name in headers if name.lower() == "idempotency-key"), None)
    if key is None or not isinstance(case.body, dict):
        return
    is_batch = "events" in case.body
    message_id = case.body.get("messageId")
    if is_batch or (message_id is not None and message_id != headers[key]):
        del headers[key]
