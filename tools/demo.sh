#!/usr/bin/env bash
# The README's first command: set up, then do berth's main job on the embedded defaults.
# It builds a busybox image from Debian's busybox-static, serves it from a real registry on
# loopback, pulls it with `npx berth images pull`, lists it, and runs a container from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec node tools/demo.mjs
