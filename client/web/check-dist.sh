#!/bin/sh
# Rebuilds the dashboard and fails when the committed dist differs from the
# fresh build (a source or gen/ts change without `npm run build`), or when
# the build made files git does not track yet.
set -eu
cd "$(dirname "$0")"
if [ ! -d node_modules ]; then
	npm ci --no-audit --no-fund
fi
npm run build
status=0
if ! git diff --exit-code --stat -- dist; then
	echo "check-dist: client/web/dist differs from the committed copy; run 'npm run build' in client/web and commit dist" >&2
	status=1
fi
untracked=$(git ls-files --others --exclude-standard -- dist)
if [ -n "$untracked" ]; then
	echo "check-dist: untracked files in client/web/dist:" >&2
	echo "$untracked" >&2
	echo "check-dist: run 'npm run build' in client/web and commit dist" >&2
	status=1
fi
exit $status
