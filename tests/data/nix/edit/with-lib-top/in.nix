{ config, lib, ... }:
with lib;
{
  sandboxed-workspace = mkIf true {
    workspaces.a = {
      type = "vm";
      config = ./workspaces/a.nix;
      ip = "192.168.83.10";
    };
  };
}
