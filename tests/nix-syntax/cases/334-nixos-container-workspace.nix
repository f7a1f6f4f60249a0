{ config, lib, pkgs, ... }:
{
  containers.dev = {
    autoStart = true;
    privateNetwork = true;
    hostAddress = "10.100.0.1";
    localAddress = "10.100.0.2";
    config = { config, pkgs, ... }: {
      services.openssh.enable = true;
      system.stateVersion = "23.11";
    };
  };
}
