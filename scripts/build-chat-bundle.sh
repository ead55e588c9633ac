#!/usr/bin/env bash
# Rebuild demo_project/chat/static/chat/rivetkit-client.js: the official RivetKit
# client (npm rivetkit, pinned in scripts/chat-bundle/package.json and its lock
# file) bundled with esbuild into one minified browser ES module, plus
# rivetkit-client.LICENSES.txt. The output is committed, so running the demo
# never needs npm; run this only to change the client version.
#
# Needs node + npm and access to the npm registry. Installs into a scratch
# directory that is removed afterwards (npm's cache makes reruns quick).
#
#   scripts/build-chat-bundle.sh                 # install from the lock file and build
#   scripts/build-chat-bundle.sh --update-lock   # re-resolve versions, rewrite the lock file, build
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/chat-bundle"
out="$here/../demo_project/chat/static/chat/rivetkit-client.js"

work="$(mktemp -d "${TMPDIR:-/tmp}/chat-bundle.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$src/package.json" "$src/entry.js" "$src/build.mjs" "$work/"

cd "$work"
# --ignore-scripts: nothing in the bundle needs an install script (rivetkit's
# native addons are not part of the browser client; esbuild's binary comes from
# its @esbuild/<platform> package).
#
# `npm install` on the lock file rather than `npm ci`: the lock lists optional
# native packages of rivetkit's server side for every platform, and registries
# or mirrors that lack some of them make `npm ci` refuse the whole lock while
# `npm install` skips them and still installs exactly the locked versions.
npm_flags=(--ignore-scripts --no-audit --no-fund --loglevel=error)
if [[ "${1:-}" == "--update-lock" ]]; then
    npm install "${npm_flags[@]}"
    cp package-lock.json "$src/package-lock.json"
else
    cp "$src/package-lock.json" .
    npm install "${npm_flags[@]}"
fi
node build.mjs "$out"
