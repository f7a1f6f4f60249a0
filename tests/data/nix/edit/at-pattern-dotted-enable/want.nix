args@{ config, lib, ... }:
{
  networking.hostName = "h";
  sandboxed-workspace.enable = true;
  sandboxed-workspace.workspaces.b = {
    type = "vm";
    config = ./workspaces/b.nix;
    ip = "192.168.83.10";
  };
  services.openssh.enable = true;
}
