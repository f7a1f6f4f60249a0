{ config, lib, pkgs, ... }:
let
  cfg = config.services.thing;
in
lib.mkMerge [
  {
    services.openssh.enable = true;
  }
  (lib.mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = [ 80 443 ];
    systemd.services.thing.wantedBy = [ "multi-user.target" ];
  })
  (lib.mkIf (!cfg.enable) {
    services.nginx.enable = lib.mkDefault false;
  })
]
