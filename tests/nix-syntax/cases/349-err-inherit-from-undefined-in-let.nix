let
  inherit (src) version;
in version
