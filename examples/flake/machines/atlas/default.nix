{ config, pkgs, lib, ... }:

{
  imports = [
    ./hardware-configuration.nix
  ];

  networking.hostName = "atlas";

  # Upstream interface for sandbox networking (NAT)
  networking.sandbox.upstreamInterface = lib.mkDefault "eno1";

  sandboxed-workspace = {
    enable = true;
    workspaces.notes = {
      type = "vm";
      config = ./workspaces/notes.nix;
      ip = "192.168.83.10";
    };
  };

  environment.systemPackages = with pkgs; [
    git
    htop
  ];
}
