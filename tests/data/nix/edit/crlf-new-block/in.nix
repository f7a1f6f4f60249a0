{ config, ... }:
{
  networking.hostName = "w";
}
