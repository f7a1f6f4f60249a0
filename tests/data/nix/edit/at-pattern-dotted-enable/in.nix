args@{ config, lib, ... }:
{
  networking.hostName = "h";
  sandboxed-workspace.enable = true;
  services.openssh.enable = true;
}
