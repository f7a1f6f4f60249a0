{ config, lib, ... }:
{
  networking.hostName = "h";

  sandboxed-workspace = {
    enable = false;
  };
}
