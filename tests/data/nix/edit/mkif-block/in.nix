{ config, lib, ... }:
{
  sandboxed-workspace = lib.mkIf config.services.foo.enable {
    enable = true;
    workspaces.a = {
      type = "container";
      config = ./workspaces/a.nix;
      ip = "192.168.83.50";
    };
  };
}
