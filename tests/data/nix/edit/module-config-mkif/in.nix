{ config, lib, ... }:
let
  cfg = config.my;
in
{
  options.my.enable = lib.mkEnableOption "my";
  config = lib.mkIf cfg.enable {
    sandboxed-workspace.workspaces.a = {
      type = "container";
      config = ./workspaces/a.nix;
      ip = "192.168.83.50";
    };
  };
}
