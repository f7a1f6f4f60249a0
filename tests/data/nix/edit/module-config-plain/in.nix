{ config, lib, ... }:
{
  imports = [ ];
  options.my.flag = lib.mkEnableOption "flag";
  config = {
    networking.hostName = "h";
  };
}
