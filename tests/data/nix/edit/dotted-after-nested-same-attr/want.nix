{ config, lib, ... }:
{
  sandboxed-workspace = {
    enable = true;
    workspaces = {
      a = { type = "vm"; config = ./workspaces/a.nix; ip = "192.168.83.10"; };
    };
  };
  sandboxed-workspace.workspaces.b = {
    type = "vm";
    config = ./workspaces/b.nix;
    ip = "192.168.83.11";
  };
  sandboxed-workspace.workspaces.c = {
    type = "vm";
    config = ./workspaces/c.nix;
    ip = "192.168.83.12";
  };
}
