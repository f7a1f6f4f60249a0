# NixOS module: services.workspaced runs the daemon as a user service, socket-activated.
self:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.workspaced;

  # verify is a config-file setting here, so that settings.verify can override it
  settingsFile = pkgs.writeText "workspaced.conf"
    (lib.concatStrings (lib.mapAttrsToList (k: v: "${k} = ${toString v}\n")
      ({ verify = cfg.verify; } // cfg.settings)));

  args = [ "--repo" cfg.repo "--machine" cfg.machine "--config" settingsFile ]
    ++ lib.optionals (cfg.sandboxRoot != null) [ "--sandbox-root" cfg.sandboxRoot ];
in
{
  options.services.workspaced = {
    enable = lib.mkEnableOption "workspaced, the daemon that declares sandboxed workspaces (a user service)";

    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "workspaced.packages.\${system}.default";
      description = "The workspaced package (daemon, wsctl, user units).";
    };

    repo = lib.mkOption {
      type = lib.types.str;
      example = "/home/alice/nixos-config";
      description = "The flake repository the daemon owns.";
    };

    machine = lib.mkOption {
      type = lib.types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "Which machines/NAME/ directory of the repository to edit.";
    };

    sandboxRoot = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/home/alice/sandboxed";
      description = "Where NAME/ssh-host-keys/ live; null means ~/sandboxed.";
    };

    verify = lib.mkOption {
      type = lib.types.enum [ "none" "parse" "eval" "build" ];
      default = "build";
      description = "Default verification level of a create.";
    };

    settings = lib.mkOption {
      type = lib.types.attrsOf (lib.types.oneOf [ lib.types.str lib.types.int ]);
      default = { };
      example = {
        subnet = "192.168.83.0/24";
        "range.container" = "192.168.83.50-192.168.83.89";
        "privilege-command" = "doas";
      };
      description = "Further config-file settings (see workspaced(8)).";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
    systemd.packages = [ cfg.package ];
    systemd.user.sockets.workspaced.wantedBy = [ "sockets.target" ];
    systemd.user.services.workspaced.serviceConfig.ExecStart = [
      ""
      "${cfg.package}/bin/workspaced ${lib.escapeShellArgs args}"
    ];
  };
}
