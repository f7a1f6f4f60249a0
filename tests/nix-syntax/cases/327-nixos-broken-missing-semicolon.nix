{ config, lib, pkgs, ... }:
{
  networking.hostName = "box";

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false
  };

  system.stateVersion = "23.11";
}
