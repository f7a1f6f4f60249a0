{ config, lib, pkgs, ... }:

# The workspace's host name is its name (notes); its IP address lives in default.nix.
{
  environment.systemPackages = with pkgs; [
    ripgrep
  ];
}
