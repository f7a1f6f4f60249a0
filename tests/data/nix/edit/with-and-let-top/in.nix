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
  };
}
