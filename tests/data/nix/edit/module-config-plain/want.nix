{ config, lib, ... }:
{
  imports = [ ];
  options.my.flag = lib.mkEnableOption "flag";
  config = {
    networking.hostName = "h";

    sandboxed-workspace = {
      enable = true;
      workspaces.dev = {
        type = "vm";
        config = ./workspaces/dev.nix;
        ip = "192.168.83.10";
      };
    };
  };
}
