{ config, lib, ... }:
{
  sandboxed-workspace.workspaces."web" = {
    type = "vm";
    config = ./workspaces/web.nix;
    ip = "192.168.83.10";
  };
  sandboxed-workspace.workspaces."1web" = {
    type = "vm";
    config = ./workspaces/1web.nix;
    ip = "192.168.83.11";
  };
}
