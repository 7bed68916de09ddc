#!/usr/bin/env bash
# `make audit`: known vulnerabilities in the locked Python packages (every package of uv.lock, all extras and
# groups), with pip-audit from its own pinned, hash-locked venv (.deps/audit; setup/audit/requirements.txt).
# pip-audit reads PyPI's advisory data for each exact version; setup/audit/check.py applies the policy: a
# vulnerability with a fixed version fails until upgraded, the rest need a dated entry in setup/audit/exceptions.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
AUDIT=.deps/audit
req=setup/audit/requirements.txt
sum=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$AUDIT/.requirements.sha256" 2>/dev/null)" != "$sum" ]; then
  printf '\033[1m==> %s\033[0m\n' "pip-audit (PyPI, hash-locked)"
  rm -rf "$AUDIT"
  UV_PYTHON_DOWNLOADS=never .deps/uv/bin/uv venv --quiet --python python3.11 "$AUDIT"
  VIRTUAL_ENV="$AUDIT" .deps/uv/bin/uv pip install --quiet --require-hashes -r "$req"
  echo "$sum" > "$AUDIT/.requirements.sha256"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.deps/uv/bin/uv export --frozen --all-extras --all-groups --no-hashes --no-emit-project --quiet -o "$work/locked.txt"
# Exit status 1 means "vulnerabilities found": the policy decides. Anything else, or no report, is an error.
status=0
"$AUDIT/bin/pip-audit" --requirement "$work/locked.txt" --disable-pip --no-deps --progress-spinner off \
  --format json --output "$work/report.json" 2> "$work/stderr" || status=$?
if [ "$status" -gt 1 ] || [ ! -s "$work/report.json" ]; then
  echo "audit: pip-audit failed (exit $status):" >&2
  grep -v "encouraged to fully hash\|pip-compile" "$work/stderr" >&2 || true
  exit 2
fi
.venv/bin/python setup/audit/check.py "$work/report.json" setup/audit/exceptions.toml
