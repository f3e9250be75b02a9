#!/usr/bin/env bash
# Scans template.yaml with checkov (docs/SECURITY-SCAN.md). Fails on any failed
# check that isn't skipped inline on its resource with a reason
# (`# checkov:skip=CKV_...:reason`), and on a skip that gives no reason.
# Installs checkov under .local/checkov on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.local/checkov
if [ ! -x "$venv/bin/checkov" ]; then
  mkdir -p .local
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check checkov
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# checkov resolves each resource's Condition from the parameters' defaults and
# skips the resources whose condition is false, so the SIEM, archive and
# KMS-only resources would go unscanned. Scan the template as it is and a copy
# with every condition-gating parameter switched on.
all_on="$tmp/template-all-options.yaml"
python3 - template.yaml "$all_on" <<'EOF'
import re
import sys

src, dst = sys.argv[1:3]
text = open(src).read()
overrides = {
    "EnableSiemForwarding": '"true"',
    "EnableArchive": '"true"',
    "CheckpointObjectLockDays": "365",
    "KmsKeyArn": '"arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000"',
}
for name, value in overrides.items():
    pattern = re.compile(r"^(  %s:\n(?:    .*\n)*?    Default: ).*$" % re.escape(name), re.M)
    text, count = pattern.subn(lambda m: m.group(1) + value, text, count=1)
    if count != 1:
        sys.exit(f"infra/checkov.sh: no Default for parameter {name} in {src}")
open(dst, "w").write(text)
EOF

# cloudformation is checkov's runner for SAM templates (AWS::Serverless::*);
# secrets looks for hard-coded credentials. (checkov's `serverless` framework
# is the Serverless Framework's serverless.yml, not SAM.)
status=0
"$venv/bin/checkov" -f template.yaml -f "$all_on" --framework cloudformation secrets \
  --skip-download --output json > "$tmp/results.json" 2> "$tmp/checkov.log" || status=$?
if [ "$status" -gt 1 ] || [ ! -s "$tmp/results.json" ]; then
  cat "$tmp/checkov.log" >&2
  echo "checkov did not run (exit $status)" >&2
  exit 1
fi

python3 - "$tmp/results.json" "$(basename "$all_on")" <<'EOF'
import json
import sys

path, all_on_name = sys.argv[1:3]
reports = json.load(open(path))
if isinstance(reports, dict):
    reports = [reports]


def where(check):
    scan = "all options on" if check["file_abs_path"].endswith(all_on_name) else "defaults"
    first, last = check["file_line_range"]
    return f"template.yaml:{first}-{last}, {scan}"


passed = failed = skipped = parse_errors = 0
problems = []
for report in reports:
    results = report.get("results")
    if results is None:  # a framework that found nothing to scan
        continue
    passed += report["summary"]["passed"]
    for check in results.get("failed_checks", []):
        failed += 1
        problems.append(f"FAILED {check['check_id']} {check['resource']} ({where(check)}): {check['check_name']}")
    for check in results.get("skipped_checks", []):
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        if reason and reason != "No comment provided":
            skipped += 1
        else:
            failed += 1
            problems.append(f"SKIPPED WITHOUT A REASON {check['check_id']} {check['resource']} ({where(check)})")
    for error in results.get("parsing_errors", []):
        parse_errors += 1
        problems.append(f"NOT PARSED {error}")

for problem in problems:
    print(problem)
ok = failed == 0 and parse_errors == 0 and passed > 0
print(
    f"checkov on template.yaml (defaults, and all options on): {passed} passed, {failed} failed, "
    f"{skipped} skipped with a reason" + (f", {parse_errors} not parsed" if parse_errors else "")
)
sys.exit(0 if ok else 1)
EOF
