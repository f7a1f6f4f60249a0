{ ... }: { 
  sandboxed-workspace = {
    enable = true;
    workspaces.dev = {
      type = "container";
      config = ./workspaces/dev.nix;
      ip = "192.168.83.50";
    };
  };
}
