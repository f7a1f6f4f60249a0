{ config, lib, ... }:
{
  environment.systemPackages = [
    pkgs.git
  ];
}
