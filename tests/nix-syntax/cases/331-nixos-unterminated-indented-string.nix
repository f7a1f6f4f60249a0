{ pkgs, ... }:
{
  systemd.services.x.script = ''
    echo hi
  ;
  networking.hostName = "box";
}
