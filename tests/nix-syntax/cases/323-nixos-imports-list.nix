{ ... }:
{
  imports = [
    ./hardware.nix
    ../../modules/common.nix
    <home-manager/nixos>
    ({ pkgs, ... }: { environment.systemPackages = [ pkgs.htop ]; })
  ];
}
