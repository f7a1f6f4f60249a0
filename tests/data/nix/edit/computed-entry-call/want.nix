{ lib, ... }:
let
  mk = { type, n, auto ? false }: { inherit type; config = ./workspaces/shared.nix; ip = "192.168.83.${toString n}"; autoStart = auto; };
in
{
  sandboxed-workspace.workspaces = {
    a = mk { type = "vm"; n = 10; };
    b = lib.mkDefault (mk { type = "vm"; n = 11; auto = true; });
    c = {
      type = "vm";
      config = ./workspaces/c.nix;
      ip = "192.168.83.12";
    };
  };
}
