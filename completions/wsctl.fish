# SPDX-License-Identifier: MIT
# fish completion for wsctl(1): commands, options, --type and --verify values, and workspace
# names asked from the daemon with `wsctl list --names` (nothing when the daemon is down).

# Workspace names from the daemon, honouring a --socket given on the command line.
function __wsctl_names
    set -l tokens (commandline -opc)
    set -l sock
    for i in (seq (count $tokens))
        switch $tokens[$i]
            case --socket
                set -l next (math $i + 1)
                if test $next -le (count $tokens)
                    set sock --socket $tokens[$next]
                end
            case '--socket=*'
                set sock $tokens[$i]
        end
    end
    wsctl $sock --timeout 2 list --names 2>/dev/null
end

set -l __wsctl_cmds create list show info hostkey events help

complete -c wsctl -f

# commands
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -a create -d 'declare a new workspace'
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -a list -d 'list declared workspaces'
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -a show -d 'show one workspace'
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -a info -d 'show daemon settings'
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -a hostkey -d "register a workspace's SSH host key"
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -a events -d 'receive event notifications'
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -a help -d 'show help for a command'

# global options
complete -c wsctl -l socket -r -F -d 'the daemon socket'
complete -c wsctl -l json -d 'print the raw result as JSON'
complete -c wsctl -l timeout -x -d 'seconds to wait for a reply'
complete -c wsctl -s h -l help -d 'show help'
complete -c wsctl -n "not __fish_seen_subcommand_from $__wsctl_cmds" -l version -d 'show the version'

# create
complete -c wsctl -n "__fish_seen_subcommand_from create" -l type -x -a 'vm container incus' -d 'workspace type'
complete -c wsctl -n "__fish_seen_subcommand_from create" -l ip -x -d 'address instead of the lowest free one'
complete -c wsctl -n "__fish_seen_subcommand_from create" -l autostart -d 'start the workspace at boot'
complete -c wsctl -n "__fish_seen_subcommand_from create" -l verify -x -a 'none parse eval build' -d 'verification level'
complete -c wsctl -n "__fish_seen_subcommand_from create" -l dry-run -d 'write nothing, show the diff'
complete -c wsctl -n "__fish_seen_subcommand_from create" -l wait-hostkey -d 'wait until the host key is registered'

# list, hostkey
complete -c wsctl -n "__fish_seen_subcommand_from list" -l names -d 'only the names, one per line'
complete -c wsctl -n "__fish_seen_subcommand_from hostkey" -l replace -d 'register the key even when a different one is registered'

# workspace names for show and hostkey; commands for help
complete -c wsctl -n "__fish_seen_subcommand_from show hostkey" -a '(__wsctl_names)' -d workspace
complete -c wsctl -n "__fish_seen_subcommand_from help" -a 'create list show info hostkey events'
