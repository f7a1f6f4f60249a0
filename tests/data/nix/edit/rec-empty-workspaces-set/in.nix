rec {
  name = "h";
  sandboxed-workspace = {
    enable = true;
    workspaces = { };
  };
}
