{ config, lib, ... }:
{
  options = { };
  config = lib.mkMerge [
    { networking.hostName = "h"; }
    (lib.mkIf config.my.enable {
      sandboxed-workspace = {
        workspaces.a = {
          type = "vm";
          config = ./workspaces/a.nix;
          ip = "192.168.83.10";
        };
        workspaces.b = {
          type = "vm";
          config = ./workspaces/b.nix;
          ip = "192.168.83.11";
        };
      };
    })
  ];
}
