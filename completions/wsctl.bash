# bash completion for wsctl(1)                                  -*- shell-script -*-
# SPDX-License-Identifier: MIT
# Commands, options, --type and --verify values, and workspace names asked from the daemon
# with `wsctl list --names` (nothing when the daemon is down). Needs no bash-completion
# helpers.

# Workspace names from the daemon, honouring a --socket given on the command line.
_wsctl_names()
{
	local -a sock=()
	local i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--socket)
			sock=(--socket "${COMP_WORDS[i + 1]}")
			;;
		--socket=*)
			sock=("${COMP_WORDS[i]}")
			;;
		esac
	done
	wsctl "${sock[@]}" --timeout 2 list --names 2>/dev/null
}

_wsctl()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	local commands="create list show info hostkey events help"
	local global="--socket --json --timeout --help"
	local cmd="" i w n_args=0
	COMPREPLY=()

	case $prev in
	--socket)
		COMPREPLY=($(compgen -f -- "$cur"))
		compopt -o filenames 2>/dev/null
		return
		;;
	--type)
		COMPREPLY=($(compgen -W "vm container incus" -- "$cur"))
		return
		;;
	--verify)
		COMPREPLY=($(compgen -W "none parse eval build" -- "$cur"))
		return
		;;
	--timeout | --ip)
		return
		;;
	esac

	# The command is the first word that is neither an option nor an option's value;
	# the words after it that are neither count as its arguments.
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		--socket | --timeout | --type | --ip | --verify)
			((i++))
			;;
		-*) ;;
		*)
			if [[ -z $cmd ]]; then
				cmd=$w
			else
				((n_args++))
			fi
			;;
		esac
	done

	if [[ -z $cmd ]]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$global --version" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		fi
		return
	fi

	local opts=""
	case $cmd in
	create) opts="--type --ip --autostart --verify --dry-run --wait-hostkey" ;;
	list) opts="--names" ;;
	hostkey) opts="--replace" ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts $global" -- "$cur"))
		return
	fi
	((n_args > 0)) && return
	case $cmd in
	show | hostkey)
		COMPREPLY=($(compgen -W "$(_wsctl_names)" -- "$cur"))
		;;
	help)
		COMPREPLY=($(compgen -W "${commands% help}" -- "$cur"))
		;;
	esac
}

complete -F _wsctl wsctl
