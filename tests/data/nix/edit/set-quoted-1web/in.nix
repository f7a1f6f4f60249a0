{ config, lib, ... }:
{
  sandboxed-workspace = {
    enable = true;
    workspaces = {
      "quoted-name" = {
        type = "container";
        config = ./workspaces/quoted-name.nix;
        ip = "192.168.83.50";
      };
    };
  };
}
