{ config
, pkgs
, ...
}@pkgs:
{ }
