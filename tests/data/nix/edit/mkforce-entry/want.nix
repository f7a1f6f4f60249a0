{ config, lib, ... }:
{
  sandboxed-workspace.workspaces.a = lib.mkForce {
    type = "vm";
    config = ./workspaces/a.nix;
    ip = "192.168.83.10";
  };
  sandboxed-workspace.workspaces.b = {
    type = "vm";
    config = ./workspaces/b.nix;
    ip = "192.168.83.11";
    autoStart = true;
  };
}
