{ config
, lib
, pkgs
, lib
, ...
}:
{ }
