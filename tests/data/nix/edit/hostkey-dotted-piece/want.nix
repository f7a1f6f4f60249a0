{ config, lib, ... }:
{
  sandboxed-workspace.workspaces.a = {
    type = "vm";
    config = ./workspaces/a.nix;
    ip = "192.168.83.10";
  };
  sandboxed-workspace.workspaces.a.hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEW";
}
