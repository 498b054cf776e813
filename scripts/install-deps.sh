#!/usr/bin/env bash
# Install the Debian 12 packages keygate needs to build, test and run its demo.
# Idempotent: packages already installed are left alone, and the package index
# is refreshed only when something has to be installed.
set -euo pipefail

packages=(
  build-essential
  cmake
  g++
  pkg-config
  libboost1.81-dev
  libboost-url1.81-dev
  libboost-json1.81-dev
  libssl-dev
  libyaml-cpp-dev
  libspdlog-dev
  libfmt-dev
  catch2
  prometheus-cpp-dev
  python3
  python3-yaml
  openssl
  curl
  yamllint
  ca-certificates
)

# Print "installed" state of one package; empty when dpkg does not know it.
package_status() {
  dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true
}

missing=()
for package in "${packages[@]}"; do
  if [[ "$(package_status "$package")" != "installed" ]]; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: nothing missing (${#packages[@]} packages already installed)"
  exit 0
fi

if ((EUID != 0)); then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (e.g. sudo $0) to install them" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: installed ${missing[*]}"
