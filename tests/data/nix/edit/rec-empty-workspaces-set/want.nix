rec {
  name = "h";
  sandboxed-workspace = {
    enable = true;
    workspaces = { 
      a = {
        type = "incus";
        config = ./workspaces/a.nix;
        ip = "192.168.83.90";
      };
    };
  };
}
