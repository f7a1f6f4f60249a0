{ config, lib, pkgs, ... }:
{
  sandboxed-workspace = {
    enable = true;
    workspaces = pkgs.callPackage ./workspaces.nix { };
  };
}
