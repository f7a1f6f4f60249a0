{ config, lib, ... }:
{
  sandboxed-workspace.workspaces.a = lib.mkForce {
    type = "vm";
    config = ./workspaces/a.nix;
    ip = "192.168.83.10";
    hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEY";
  };
}
