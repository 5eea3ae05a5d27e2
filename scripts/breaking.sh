#!/usr/bin/env bash
# buf breaking against main; on main itself, against the previous commit.
set -euo pipefail
buf=${1:-node_modules/.bin/buf}
if ! git rev-parse --verify -q HEAD >/dev/null; then
  echo "buf breaking: no history yet, nothing to compare against"; exit 0
fi
branch=$(git rev-parse --abbrev-ref HEAD)
if [ "$branch" = main ]; then
  against=HEAD~1
elif git rev-parse --verify -q main >/dev/null; then
  against=main
elif git rev-parse --verify -q origin/main >/dev/null; then
  against=origin/main
else
  against=HEAD~1
fi
if ! git rev-parse --verify -q "$against^{commit}" >/dev/null; then
  echo "buf breaking: $against does not exist yet (first commit), nothing to compare against"; exit 0
fi
if ! git cat-file -e "$against:buf.yaml" 2>/dev/null; then
  echo "buf breaking: $against has no buf.yaml yet, nothing to compare against"; exit 0
fi
echo "buf breaking against $against"
exec "$buf" breaking --against ".git#ref=$(git rev-parse "$against")"
