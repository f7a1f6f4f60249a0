{ config, ... }:
{
  networking.hostName = "w";

  sandboxed-workspace = {
    enable = true;
    workspaces.dev = {
      type = "vm";
      config = ./workspaces/dev.nix;
      ip = "192.168.83.10";
    };
  };
}
