{ lib, stdenv, fetchurl }:
stdenv.mkDerivation rec {
  pname = "foo";
  version = "1.0";
  src = fetchurl {
    url = "https://example.org/${pname}-${version}.tar.gz";
    sha256 = lib.fakeSha256;
  };
  meta = with lib; {
    license = licenses.mit;
    platforms = platforms.linux;
  };
}
