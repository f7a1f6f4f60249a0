{ config, lib, ... }:

lib.mkMerge [
  {
    sandboxed-workspace.workspaces.a = {
      type = "vm";
      config = ./workspaces/a.nix;
      ip = "192.168.83.10";
    };
  }
  { networking.hostName = "m"; }
]
