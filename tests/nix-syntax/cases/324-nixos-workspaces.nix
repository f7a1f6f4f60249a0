{ config, lib, pkgs, ... }:
{
  imports = [
    ./workspaces/dev.nix
  ];

  sandboxed-workspace = {
    enable = true;
    workspaces = {
      dev = {
        type = "container";
        ip = "10.100.0.2";
        config = ./workspaces/dev.nix;
        hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQmWmN0b3RhbGx5IGZha2Uga2V5IGZvciB0ZXN0cw";
      };
      vm1 = {
        type = "vm";
        ip = "10.101.0.2";
        config = ./workspaces/vm1.nix;
      };
    };
  };
}
