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
      "1web" = {
        type = "container";
        config = ./workspaces/1web.nix;
        ip = "192.168.83.51";
      };
    };
  };
}
