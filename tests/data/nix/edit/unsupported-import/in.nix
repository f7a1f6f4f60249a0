{ config, lib, ... }:
{
  sandboxed-workspace = import ./sandboxed.nix;
}
