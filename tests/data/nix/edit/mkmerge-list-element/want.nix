{ config, lib, ... }:

lib.mkMerge [
  {
    sandboxed-workspace.workspaces.a = {
      type = "vm";
      config = ./workspaces/a.nix;
      ip = "192.168.83.10";
    };
    sandboxed-workspace.workspaces.b = {
      type = "vm";
      config = ./workspaces/b.nix;
      ip = "192.168.83.11";
    };
  }
  { networking.hostName = "m"; }
]
