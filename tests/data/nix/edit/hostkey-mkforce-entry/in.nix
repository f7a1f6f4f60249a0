{ config, lib, ... }:
{
  sandboxed-workspace.workspaces.a = lib.mkForce {
    type = "vm";
    config = ./workspaces/a.nix;
    ip = "192.168.83.10";
  };
}
