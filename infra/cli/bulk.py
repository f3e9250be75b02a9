"""The CLI's bulk checks against a running audit-local (infra/test.sh):
`audit ingest` of NDJSON lines, killed midway and rerun, stores every line
exactly once; the trail is then filled to 100k events through the API, and
`audit export` writes them in each format with its peak RSS; the CSV round
trip of a few fields; every OCSF record valid against the OCSF 1.4.0 API
Activity schema (the `ocsf-json-schema` package, offline).

`audit ingest` gives every line a messageId, so each is an idempotent
transaction; the embedded store runs those one at a time. The test script
ingests all 100k lines (killed and rerun) and exports those; with `ingest`
below `total`, the rest is filled through the API's plain batches.

Usage: python bulk.py <audit binary> <api url> <token> <workdir> [ingest] [total]"""

import csv
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

audit, api, token, work = sys.argv[1:5]
count = int(sys.argv[5]) if len(sys.argv) > 5 else 100_000
total = int(sys.argv[6]) if len(sys.argv) > 6 else 100_000
env = dict(os.environ, AUDIT_URL=api, AUDIT_TOKEN=token)
os.makedirs(work, exist_ok=True)
lines_path = os.path.join(work, "bulk.ndjson")
kinds = ["invoice.created", "invoice.paid", "user.login", "role.revoked", "file.downloaded"]
with open(lines_path, "w") as out:
    for i in range(count):
        event = {"eventType": f"bulk.{kinds[i % 5]}", "serviceName": "billing",
                 "userId": f"user-{i % 97}", "ipAddress": f"198.51.100.{i % 250}",
                 "userAgent": "bulk/1.0", "message": f"line {i + 1}",
                 "data": {"line": i + 1, "amount": round(i * 0.25, 2), "customer": {"tier": ["free", "pro"][i % 2]}}}
        if i % 3 == 0:
            event["messageId"] = f"given-{i}"
        out.write(json.dumps(event) + "\n")


def run(args, **kwargs):
    started = time.time()
    result = subprocess.run([audit, *args], env=env, capture_output=True, text=True, **kwargs)
    return result, time.time() - started


# Ingest, killed midway, then rerun: every line stored exactly once.
first = subprocess.Popen([audit, "ingest", lines_path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# Midway: a few seconds to a minute in, whatever the volume.
time.sleep(random.uniform(3.0, min(60.0, 3.0 + count / 2000)))
first.send_signal(signal.SIGKILL)
first.wait()
rerun, seconds = run(["ingest", lines_path])
assert rerun.returncode == 0, rerun.stderr
print(f"ingest rerun: {rerun.stderr.strip().splitlines()[-1]} in {seconds:.1f} s")

# The rest of the 100k through the API's plain batches (no messageId).
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

filled = 0
while count + filled < total:
    n = min(1000, total - count - filled)
    batch = [{"eventType": "fill.event", "serviceName": "filler", "userId": f"f-{(filled + i) % 31}",
              "data": {"fill": filled + i, "customer": {"tier": "pro"}}} for i in range(n)]
    for attempt in range(20):
        request = urllib.request.Request(f"{api}/audit/events", data=json.dumps({"events": batch}).encode(),
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
            body = json.load(error)
        # Only the events answered `failed` are sent again (503: retry those).
        results = body.get("results", [])
        batch = [event for event, result in zip(batch, results) if result.get("status") == "failed"]
        assert all(r.get("status") in ("stored", "failed") for r in results), body
        if not batch:
            break
        time.sleep(0.5 * (attempt + 1))
    assert not batch, f"{len(batch)} events kept failing"
    filled += n
if filled:
    print(f"filled to {count + filled} events through the API")

time.sleep(12)  # the settle horizon passes for the last events

# Exports in each format, with peak RSS (of the export process alone).
results = {}
for fmt in ["ndjson", "csv", "ocsf"]:
    path = os.path.join(work, f"export.{fmt}")
    if os.path.exists(path):
        os.remove(path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done, seconds = run(["export", "--from", "2h", "--format", fmt, "--out", path])
    assert done.returncode == 0, done.stderr
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    results[fmt] = (path, seconds)
    print(f"export {fmt}: {done.stderr.strip().splitlines()[-1]}; peak RSS of the run so far {peak_kb / 1024:.1f} MiB (before: {before / 1024:.1f})")

with open(results["ndjson"][0]) as f:
    events = [json.loads(line) for line in f]
bulk = [e for e in events if e["eventType"].startswith("bulk.")]
lines = sorted(e["data"]["line"] for e in bulk)
assert lines == list(range(1, count + 1)), f"{len(lines)} bulk events exported, {len(set(lines))} distinct lines"
fill = sorted(e["data"]["fill"] for e in events if e["eventType"] == "fill.event")
assert fill == list(range(total - count)), f"{len(fill)} fill events exported"
print(f"ndjson: {len(events)} events ({len(bulk)} ingested lines, each exactly once; {len(fill)} more; the rest the API's own records)")

# CSV: the same events, a few fields round trip.
with open(results["csv"][0], newline="") as f:
    rows = list(csv.DictReader(f))
by_cursor = {e["cursor"]: e for e in events}
# Each export's own reads add records of the API's; the events are the same.
rows = [r for r in rows if r["cursor"] in by_cursor]
assert len(rows) == len(events), (len(rows), len(events))
for row in rows[:: max(1, len(rows) // 500)]:
    event = by_cursor[row["cursor"]]
    for field in ["eventType", "userId", "timestamp", "message"]:
        assert row[field] == str(event.get(field) or ""), (field, row[field], event.get(field))
    if event["eventType"].startswith("bulk."):
        assert row["data.line"] == str(event["data"]["line"])
        assert row["data.customer.tier"] == event["data"]["customer"]["tier"]
print(f"csv: {len(rows)} rows; fields round trip")

# OCSF: every record valid against the class's schema.
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402

schemas = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.4.0"))
validator = Draft202012Validator(schemas.get_class_schema(class_name="api_activity", profiles=[]))
with open(results["ocsf"][0]) as f:
    records = [json.loads(line) for line in f]
assert len([r for r in records if r["metadata"]["uid"] in by_cursor]) == len(events)
for record in records:
    errors = sorted(validator.iter_errors(record), key=lambda e: e.path)
    assert not errors, f"{record['metadata']['uid']}: {errors[0].message} at {list(errors[0].path)}"
print(f"ocsf: {len(records)} records valid against OCSF 1.4.0 api_activity (class_uid 6003)")
