{ config, lib, ... }:
let
  ws = {
    a = { type = "vm"; config = ./workspaces/a.nix; ip = "192.168.83.10"; };
  };
in
{
  sandboxed-workspace.workspaces = ws;
}
