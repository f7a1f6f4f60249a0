#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# make-verdicts.sh: asks the real `nix-instantiate --parse` about every file in cases/ and
# writes one line per file, sorted by name:
#     FILE<TAB>ok
#     FILE<TAB>error<TAB>LINE
# LINE is the line of the position Nix reports (the `at PATH:LINE:COL:` line under the
# message, or `, at PATH:LINE:COL` inside it), or `-` when its message names no line.
#
# usage: make-verdicts.sh [OUTPUT]
#     OUTPUT defaults to verdicts.tsv beside this script; `-` writes to stdout.
# run.sh calls it with a temporary OUTPUT to compare the stored file with the live answer.

set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/verdicts.tsv}

if ! command -v nix-instantiate >/dev/null 2>&1; then
	echo "make-verdicts.sh: nix-instantiate not found" >&2
	exit 2
fi

# One file: prints its verdict line.
verdict_one() {
	local f=$1 name=${1##*/} msg line
	if msg=$(nix-instantiate --parse -- "$f" 2>&1 >/dev/null); then
		printf '%s\tok\n' "$name"
		return 0
	fi
	line=$(printf '%s\n' "$msg" |
		sed -n -E 's/^[[:space:]]+at .*:([0-9]+):[0-9]+:?[[:space:]]*$/\1/p' | head -n 1)
	if [ -z "$line" ]; then
		line=$(printf '%s\n' "$msg" |
			sed -n -E 's/.*, at .*:([0-9]+):[0-9]+.*/\1/p' | head -n 1)
	fi
	printf '%s\terror\t%s\n' "$name" "${line:--}"
}
export -f verdict_one

shopt -s nullglob
files=("$here"/cases/*.nix)
if [ ${#files[@]} -eq 0 ]; then
	echo "make-verdicts.sh: no cases in $here/cases" >&2
	exit 2
fi

tmp=$(mktemp "${TMPDIR:-/tmp}/nix-verdicts.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# shellcheck disable=SC2016 # $1 is for the inner bash
printf '%s\0' "${files[@]}" |
	xargs -0 -n 1 -P 2 bash -c 'verdict_one "$1"' _ | sort -t "$(printf '\t')" -k 1,1 >"$tmp"

if [ "$(wc -l <"$tmp")" -ne ${#files[@]} ]; then
	echo "make-verdicts.sh: got $(wc -l <"$tmp") verdicts for ${#files[@]} files" >&2
	exit 1
fi

if [ "$out" = - ]; then
	cat "$tmp"
else
	cat "$tmp" >"$out"
fi
