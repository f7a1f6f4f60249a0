{
  description = "workspaced: declares sandboxed workspaces in a NixOS flake repository";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        workspaced = pkgs.callPackage ./nix/package.nix { };
        default = workspaced;
      });

      nixosModules.default = import ./nix/module.nix self;
      nixosModules.workspaced = self.nixosModules.default;
    };
}
