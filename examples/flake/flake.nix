{
  description = "Example NixOS flake with sandboxed workspaces (workspaced demo)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";

  outputs = { self, nixpkgs, ... }: {
    nixosConfigurations.atlas = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [ ./machines/atlas/default.nix ];
    };
  };
}
