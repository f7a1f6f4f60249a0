{ config, lib, pkgs, ... }:

with lib;

let
  subnet = "192.168.83";
in
{
  sandboxed-workspace = {
    enable = true;
    workspaces.a = {
      type = "vm";
      config = ./workspaces/a.nix;
      ip = "${subnet}.10";
    };
    workspaces.b = {
      type = "vm";
      config = ./workspaces/b.nix;
      ip = "192.168.83.11";
    };
  };
}
