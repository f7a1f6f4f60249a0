#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run.sh: the Nix syntax conformance suite. Runs `WORKSPACED_BINARY --check` on every file
# in cases/ and compares its verdict (accepted or rejected) with Nix's: asked live from
# `nix-instantiate --parse` when it is installed (and then the stored verdicts.tsv must
# still agree with the live answer), read from verdicts.tsv otherwise. For files both
# reject, it compares the line we report with the line Nix reports and counts matches.
#
# usage: run.sh WORKSPACED_BINARY
#
# Output: one line per mismatch, the line-match count, then exactly
#     nix-syntax: N passed, M failed
# Set NIX_SYNTAX_OFFLINE=1 to use verdicts.tsv even when nix-instantiate is installed.
# Exit status: 0 when every verdict agrees and at least MIN_LINE_MATCHES lines match.

set -uo pipefail
export LC_ALL=C

MIN_LINE_MATCHES=20
BATCH_TIMEOUT=120
FILE_TIMEOUT=10

if [ $# -ne 1 ]; then
	echo "usage: $0 WORKSPACED_BINARY" >&2
	exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$1
case $bin in
*/*) bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin") ;;
*) bin=$(command -v "$bin" || true) ;;
esac
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
	echo "run.sh: not an executable: $1" >&2
	exit 2
fi

stored=$here/verdicts.tsv
if [ ! -r "$stored" ]; then
	echo "run.sh: missing $stored" >&2
	exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nix-syntax.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT

cd "$here/cases" || exit 2
shopt -s nullglob
files=(*.nix)
if [ ${#files[@]} -eq 0 ]; then
	echo "run.sh: no cases in $here/cases" >&2
	exit 2
fi

declare -A ref=() st=() ours=() bad=()

# Reads a verdicts file (FILE<TAB>ok | FILE<TAB>error<TAB>LINE) into the named array.
# shellcheck disable=SC2034,SC2004 # written through the nameref
load_verdicts() {
	local -n into=$1
	local f v l
	while IFS=$'\t' read -r f v l; do
		[ -n "$f" ] || continue
		if [ "$v" = error ]; then
			into[$f]="error ${l:--}"
		else
			into[$f]=$v
		fi
	done <"$2"
}

load_verdicts st "$stored"

source="stored verdicts.tsv"
if [ "${NIX_SYNTAX_OFFLINE:-0}" != 1 ] && command -v nix-instantiate >/dev/null 2>&1; then
	source="live nix-instantiate"
	if ! "$here/make-verdicts.sh" "$tmp/live.tsv"; then
		echo "run.sh: make-verdicts.sh failed" >&2
		exit 2
	fi
	load_verdicts ref "$tmp/live.tsv"
	for f in "${files[@]}"; do
		if [ "${st[$f]-missing}" != "${ref[$f]-missing}" ]; then
			echo "STALE $f: verdicts.tsv says '${st[$f]-missing}', nix-instantiate says '${ref[$f]-missing}' (rerun make-verdicts.sh)"
			bad[$f]=1
		fi
	done
	for f in "${!st[@]}"; do
		[ -e "$f" ] || echo "STALE verdicts.tsv names $f, which is not in cases/"
	done
else
	for f in "${!st[@]}"; do
		ref[$f]=${st[$f]}
	done
fi

# Parses --check output (FILE: ok | FILE:LINE:COLUMN: message) into ours[]; the first
# line about a file wins.
parse_check_output() {
	local l f
	while IFS= read -r l; do
		l=${l%$'\r'}
		if [[ $l =~ ^(\./)?([^:]+):\ ok$ ]]; then
			f=${BASH_REMATCH[2]}
			[ -n "${ours[$f]-}" ] || ours[$f]=ok
		elif [[ $l =~ ^(\./)?([^:]+):([0-9]+):([0-9]+): ]]; then
			f=${BASH_REMATCH[2]}
			[ -n "${ours[$f]-}" ] || ours[$f]="error ${BASH_REMATCH[3]}"
		fi
	done <"$1"
}

# One invocation for every file; files it says nothing about are retried one by one.
timeout "$BATCH_TIMEOUT" "$bin" --check "${files[@]}" >"$tmp/batch.out" 2>&1
batch_rc=$?
parse_check_output "$tmp/batch.out"

n_err=0
for f in "${files[@]}"; do
	[ "${ours[$f]-}" = ok ] || n_err=$((n_err + 1))
done
if [ "$batch_rc" -gt 1 ]; then
	# A crash, a timeout or a sanitizer report: find the file by running each alone.
	echo "NOTE --check on all files exited $batch_rc; running every file alone"
	ours=()
elif { [ "$n_err" -eq 0 ] && [ "$batch_rc" -ne 0 ]; } ||
	{ [ "$n_err" -gt 0 ] && [ "$batch_rc" -eq 0 ]; }; then
	echo "NOTE --check on all files exited $batch_rc with $n_err files not ok; retrying those one by one"
fi

for f in "${files[@]}"; do
	[ -z "${ours[$f]-}" ] || continue
	timeout "$FILE_TIMEOUT" "$bin" --check "$f" >"$tmp/one.out" 2>&1
	rc=$?
	parse_check_output "$tmp/one.out"
	if [ -z "${ours[$f]-}" ]; then
		echo "FAIL $f: --check gave no verdict (exit $rc): $(head -c 200 "$tmp/one.out" | tr '\n' ' ')"
		ours[$f]="none"
	elif { [ "${ours[$f]}" = ok ] && [ "$rc" -ne 0 ]; } ||
		{ [ "${ours[$f]}" != ok ] && [ "$rc" -ne 1 ]; }; then
		echo "FAIL $f: --check said '${ours[$f]}' but exited $rc"
		bad[$f]=1
	fi
done

passed=0
failed=0
lines_checked=0
lines_matched=0
for f in "${files[@]}"; do
	want=${ref[$f]-missing}
	got=${ours[$f]}
	if [ "$want" = missing ]; then
		echo "FAIL $f: no Nix verdict for it (rerun make-verdicts.sh)"
		bad[$f]=1
	elif [ "$got" != none ] && [ "${want%% *}" != "${got%% *}" ]; then
		echo "FAIL $f: nix-instantiate: ${want/error /error at line }; workspaced: ${got/error /error at line }"
		bad[$f]=1
	elif [ "${want%% *}" = error ] && [ "$got" != none ]; then
		wl=${want#error }
		gl=${got#error }
		if [ "$wl" != - ]; then
			lines_checked=$((lines_checked + 1))
			if [ "$wl" = "$gl" ]; then
				lines_matched=$((lines_matched + 1))
			else
				echo "LINE $f: nix-instantiate line $wl, workspaced line $gl"
			fi
		fi
	fi
	if [ "$got" = none ] || [ -n "${bad[$f]-}" ]; then
		failed=$((failed + 1))
	else
		passed=$((passed + 1))
	fi
done

echo "nix-syntax: verdicts from $source; error lines matching Nix: $lines_matched of $lines_checked (need $MIN_LINE_MATCHES)"
echo "nix-syntax: $passed passed, $failed failed"

[ "$failed" -eq 0 ] && [ "$lines_matched" -ge "$MIN_LINE_MATCHES" ]
