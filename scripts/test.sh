#!/usr/bin/env bash
# Runs every test of workspaced, from a clean checkout on Debian 12:
#   1. installs what is missing (apt-get),
#   2. gcc build with -Werror, the whole ctest suite,
#   3. clang build with AddressSanitizer + UndefinedBehaviorSanitizer, the whole suite again,
#   4. a bounded libFuzzer run of the Nix parser (WS_FUZZ_SECONDS, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
bash scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${WS_FUZZ_SECONDS:-60}
export TMPDIR=${TMPDIR:-/tmp}

# Builds quietly; on failure the whole build log is shown.
build() {
	local dir=$1
	if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
		cat "$dir/build.log"
		echo "== build failed in $dir"
		exit 1
	fi
}

echo "== gcc build (-Werror)"
cmake -S . -B build/gcc -DWS_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
build build/gcc
echo "== tests (gcc)"
ctest --test-dir build/gcc --output-on-failure -j"$jobs"

echo "== clang build with ASan/UBSan"
CC=clang cmake -S . -B build/asan -DWS_WERROR=ON -DWS_SANITIZE=ON -DWS_FUZZ=ON \
	-DCMAKE_BUILD_TYPE=Debug >/dev/null
build build/asan
echo "== tests (ASan/UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build/asan --output-on-failure -j"$jobs"

if [ -x build/asan/tests/fuzz/fuzz-nix-parse ] && [ "$fuzz_seconds" -gt 0 ]; then
	echo "== fuzzing the Nix parser for ${fuzz_seconds}s"
	corpus=$(mktemp -d)
	trap 'rm -rf "$corpus"' EXIT
	find tests/data tests/nix-syntax -name '*.nix' -exec cp {} "$corpus"/ \; 2>/dev/null || true
	if ! build/asan/tests/fuzz/fuzz-nix-parse -max_total_time="$fuzz_seconds" -max_len=4096 \
		"$corpus" >build/asan/fuzz.log 2>&1; then
		tail -n 60 build/asan/fuzz.log
		echo "== the fuzzer found a problem (build/asan/fuzz.log; the input is in crash-*)"
		exit 1
	fi
	grep -E "^Done [0-9]+ runs" build/asan/fuzz.log | sed 's/^/fuzz: /; s/$/, no crash, no leak/'
fi
echo "== all tests passed"
