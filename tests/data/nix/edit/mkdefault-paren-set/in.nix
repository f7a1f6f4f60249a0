{ config, lib, ... }:
{
  sandboxed-workspace.workspaces = (lib.mkDefault {
    a = {
      type = "incus";
      config = ./workspaces/a.nix;
      ip = "192.168.83.90";
    };
  });
}
