{ lib, ... }:
{
  options = {
    a = lib.mkOption {
      type = lib.types.str;
      default = helper "x";
    };
  };
}
