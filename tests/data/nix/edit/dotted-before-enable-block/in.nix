{ config, lib, ... }:
{
  sandboxed-workspace.workspaces.a = {
    type = "vm";
    config = ./workspaces/a.nix;
    ip = "192.168.83.10";
  };
  sandboxed-workspace = {
    enable = false;
  };
}
