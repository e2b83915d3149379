#!/usr/bin/env bash
# Installs everything berth's build, demo and tests need on a fresh Debian 12 machine, then builds.
# Idempotent: a second run only checks. Run as root (apt-get); CI runs it from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the oracles and services the tests compare with or talk to.
#  docker-registry: the loopback OCI registry;  skopeo, umoci: image oracles;
#  containerd (ctr), runc: the reference implementation; busybox-static: fixture images;
#  zstd: zstd fixture layers; apache2-utils: htpasswd (bcrypt) for the basic-auth registry;
#  openssl: the token-auth registry's signing certificate; util-linux: flock(1) in tests;
#  libzstd1, libisal2, libdeflate0: layer (de)compression through koffi (@berth/sys).
#  iproute2, nftables, libnftables1, containernetworking-plugins: networking (libnftables is
#  loaded through koffi; ip/nft/the CNI plugins are oracles and the CNI driver's plugins);
#  e2fsprogs: mkfs.ext4 for the pull+unpack benchmark's fresh file systems.
APT_PACKAGES=(docker-registry skopeo umoci containerd runc busybox-static zstd apache2-utils openssl util-linux jq
  libzstd1 libisal2 libdeflate0 iproute2 nftables libnftables1 containernetworking-plugins e2fsprogs)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node dependencies, exactly as locked. better-sqlite3 builds from source here (its prebuilt
# download is unreachable); package.json's allowScripts approves that install script.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

npm run build --silent
