{ lib, ... }:
{
  sandboxed-workspace.workspaces.dev = {
    type = "incus";
    ip = "10.102.0.5";
  };
  sandboxed-workspace.workspaces."my-box".type = "vm";
  sandboxed-workspace.workspaces."my-box".ip = "10.101.0.9";
}
