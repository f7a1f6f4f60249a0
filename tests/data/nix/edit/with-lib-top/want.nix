{ config, lib, ... }:
with lib;
{
  sandboxed-workspace = mkIf true {
    workspaces.a = {
      type = "vm";
      config = ./workspaces/a.nix;
      ip = "192.168.83.10";
    };
    workspaces.b = {
      type = "vm";
      config = ./workspaces/b.nix;
      ip = "192.168.83.11";
    };
  };
}
