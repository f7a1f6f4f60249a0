#!/usr/bin/env bash
# The main job on a built-in example: installs what is missing, builds, makes a temporary
# flake repository from examples/flake (machine "atlas", one workspace declared), starts
# workspaced on it, creates a container workspace with wsctl, lists the workspaces and
# shows what was staged. Leaves nothing running; the temporary repository is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
bash scripts/deps.sh

echo "== building"
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/demo -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
workspaced=$top/build/demo/workspaced
wsctl=$top/build/demo/wsctl

work=$(mktemp -d "${TMPDIR:-/tmp}/workspaced-demo.XXXXXX")
repo=$work/flake
cp -r examples/flake "$repo"
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.invalid commit -q -m "atlas: initial configuration"

export XDG_RUNTIME_DIR=$work/run XDG_STATE_HOME=$work/state XDG_CONFIG_HOME=$work/config
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
sock=$XDG_RUNTIME_DIR/workspaced.sock

echo "== starting: workspaced --repo $repo --machine atlas --verify parse"
"$workspaced" --repo "$repo" --machine atlas --sandbox-root "$work/sandboxed" --verify parse \
	2>"$work/workspaced.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

echo
echo "\$ wsctl create dev --type container"
"$wsctl" create dev --type container
echo
echo "\$ wsctl list"
"$wsctl" list
echo
echo "\$ git diff --cached"
git -C "$repo" --no-pager diff --cached
echo
kill "$pid"; wait "$pid" 2>/dev/null || true
trap - EXIT
echo "The example repository is $repo (daemon log: $work/workspaced.log)."
