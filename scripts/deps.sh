#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages workspaced needs to build and test.
# Does nothing when everything is already there. Runs apt-get through sudo when not root.
set -euo pipefail

pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libuv1-dev libjson-c-dev libgit2-dev zlib1g-dev libsystemd-dev libcmocka-dev
      git nix-bin python3 openssh-client socat scdoc dbus-daemon systemd)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
