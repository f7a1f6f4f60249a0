{ config, lib, pkgs, ... }:
with lib;
let
  cfg = config.services.hello;
in {
  options.services.hello = {
    enable = mkEnableOption "hello service";
    greeting = mkOption {
      type = types.str;
      default = "hello";
      description = "What to say.";
    };
    port = mkOption {
      type = types.port;
      default = 8080;
    };
  };

  config = mkIf cfg.enable {
    systemd.services.hello = {
      description = "Hello";
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        ExecStart = "${pkgs.hello}/bin/hello -g ${escapeShellArg cfg.greeting}";
        DynamicUser = true;
      };
    };
  };
}
