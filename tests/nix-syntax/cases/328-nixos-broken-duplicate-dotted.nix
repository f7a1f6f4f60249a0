{ config, lib, pkgs, ... }:
{
  services.openssh.enable = true;
  networking.hostName = "box";
  services = {
    nginx.enable = true;
    openssh.enable = false;
  };
}
