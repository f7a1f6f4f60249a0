{ config, lib, ... }:
{
  sandboxed-workspace = {
    enable = true;
    workspaces.a = {
      type = "vm";
      config = ./workspaces/a.nix;
      ip = "192.168.83.10";
    }; # the first one, keep it
    # a comment on its own line after the entries
  };
}
