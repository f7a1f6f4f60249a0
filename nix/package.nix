{ lib, stdenv, cmake, pkg-config, scdoc, libuv, json_c, libgit2, zlib, systemd }:

stdenv.mkDerivation {
  pname = "workspaced";
  version = "0.1.0";

  src = lib.cleanSource ../.;

  nativeBuildInputs = [ cmake pkg-config scdoc ];
  buildInputs = [ libuv json_c libgit2 zlib systemd ];

  cmakeFlags = [
    "-DWS_TESTS=OFF"
    "-DWS_SYSTEMD_USER_UNIT_DIR=${placeholder "out"}/lib/systemd/user"
  ];

  meta = {
    description = "Daemon that declares sandboxed workspaces in a NixOS flake and registers their SSH host keys";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "wsctl";
  };
}
