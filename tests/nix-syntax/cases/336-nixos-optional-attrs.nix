{ lib, config, ... }:
{
  environment.etc = lib.optionalAttrs config.services.openssh.enable {
    "ssh/banner".text = "hi";
  } // lib.mapAttrs' (n: v: lib.nameValuePair "x/${n}" { text = v; }) { a = "1"; };
}
