/etc/nixos/configuration.nix
