{ pkgs, ... }:
''
  one
  two ${pkgs.hello}
  three ${nothing}
''
