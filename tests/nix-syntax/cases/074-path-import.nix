import ./foo.nix { }
