{ lib, ... }:
let
  port = 22;
  hosts = [ "a" "b" ];
  port = 2222;
in {
  services.openssh.ports = [ port ];
}
