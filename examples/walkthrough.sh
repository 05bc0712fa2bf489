#!/usr/bin/env bash
# The README's walkthrough: a preview, a replay and an audit, created, fetched and listed
# with curl against the server `make run` starts. Run it from another terminal:
#
#   examples/walkthrough.sh
#
# Every variable it uses has a default here; override any from the environment:
#   API      the server                          (http://127.0.0.1:8010, `make run`'s)
#   ENGINES  the engines command, for the token  (this checkout's .venv/bin/engines)
#   CANVAS   the canvas the artifacts belong to  (c_board1)
# `engines token` signs with the key the server uses: AUTH_JWT_SIGNING if set, else the dev
# key in ENGINES_HOME (default: this checkout's var/, where `make run` keeps it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
API=${API:-http://127.0.0.1:8010}
ENGINES=${ENGINES:-$ROOT/.venv/bin/engines}
CANVAS=${CANVAS:-c_board1}

# the server first: say which URL did not answer, not curl's bare exit code 7
if ! curl -s -o /dev/null --max-time 5 "$API/healthz"; then
  echo "walkthrough: no server answers at $API/healthz; start one (make run, or" \
       "make run PORT=8020) and point API at it: API=http://127.0.0.1:8020 $0" >&2
  exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# show COMMAND: print it as typed, then run it (so the output below each `$` line is real)
show() { printf '\n$ %s\n' "$1"; eval "$1"; }
# field NAME < JSON: one top-level field of a JSON document
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# a 1x1 PNG and a five-keyframe replay, made here so the walkthrough needs no files
printf '%s' 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==' \
  | base64 -d > preview.png
cat > replay.json <<'JSON'
{"rev": 42, "rev_from": 30, "mode": "keyframes",
 "keyframes": [{"t_ms": 0, "rev": 30, "type": "snapshot", "data": {"shapes": 3}},
               {"t_ms": 400, "rev": 31, "type": "commit", "data": {"op": "move"}},
               {"t_ms": 900, "rev": 35, "type": "snapshot", "data": {"shapes": 5}},
               {"t_ms": 1500, "rev": 40, "type": "gesture", "data": {"tool": "pen"}},
               {"t_ms": 2100, "rev": 42, "type": "commit", "data": {"op": "resize"}}],
 "summary": {"commits": 2}}
JSON

show 'TOKEN=$("$ENGINES" token --tenant t_acme --sub u_ana --role member)'
show 'H=(-H "Authorization: Bearer $TOKEN" -H "X-Tenant-Id: t_acme" -H "X-Env: dev" -H "X-Project-Id: p_web")'

show 'curl -s --fail-with-body "${H[@]}" -H "Content-Type: image/png" --data-binary @preview.png "$API/canvas/$CANVAS/artifacts/preview?rev=7" > preview.json'
show 'python3 -m json.tool preview.json'
show 'ID=$(field id < preview.json)'
show 'curl -s --fail-with-body -D - -o fetched.png "${H[@]}" "$API/canvas/$CANVAS/artifacts/$ID/content"'
show 'cmp preview.png fetched.png && echo identical'
show 'curl -s -o /dev/null -w "%{http_code}\n" "${H[@]}" -H "Range: bytes=0-7" "$API/canvas/$CANVAS/artifacts/$ID/content"'

show 'curl -s --fail-with-body "${H[@]}" -H "Content-Type: application/json" --data-binary @replay.json "$API/canvas/$CANVAS/artifacts/replay" | tee replay-created.json; echo'
show 'RID=$(field id < replay-created.json)'
show 'curl -s --fail-with-body "${H[@]}" "$API/canvas/$CANVAS/artifacts/$RID/content?from_ms=1000&to_ms=2000"; echo'

show 'curl -s --fail-with-body "${H[@]}" -X POST "$API/canvas/$CANVAS/artifacts/audit?rev=42" | tee audit-created.json; echo'
show 'AID=$(field id < audit-created.json)'
show 'curl -s --fail-with-body "${H[@]}" "$API/canvas/$CANVAS/artifacts/$AID/content"; echo'

show 'curl -s --fail-with-body "${H[@]}" "$API/canvas/$CANVAS/artifacts?limit=2"; echo'
show 'curl -s --fail-with-body "${H[@]}" "$API/canvas/$CANVAS/artifacts/latest?kind=preview"; echo'
show 'curl -s --fail-with-body "${H[@]}" "$API/canvas/$CANVAS/artifacts/$ID/lineage"; echo'

# another tenant's headers with this token: refused, with the error envelope
show 'curl -s -H "Authorization: Bearer $TOKEN" -H "X-Tenant-Id: t_other" -H "X-Env: dev" -H "X-Project-Id: p_web" "$API/canvas/$CANVAS/artifacts/$ID"; echo'

printf '\nwalkthrough: done\n'
