{ config, lib, ... }:
{
  sandboxed-workspace.workspaces."web" = {
    type = "vm";
    config = ./workspaces/web.nix;
    ip = "192.168.83.10";
  };
}
