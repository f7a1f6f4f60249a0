{ config, lib, ... }:
{
  networking.hostName = "h";

  sandboxed-workspace = {
    enable = false;
    workspaces.first = {
      type = "vm";
      config = ./workspaces/first.nix;
      ip = "192.168.83.10";
    };
  };
}
