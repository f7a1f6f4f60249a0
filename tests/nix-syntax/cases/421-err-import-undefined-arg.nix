import ./x.nix { inherit pkgs; }
