#!/usr/bin/env bash
# The README's first command: set up, then do berth's main job on the embedded defaults.
# It builds a busybox image from Debian's busybox-static, serves it from a real registry on
# loopback, pulls it with `npx berth images pull`, and lists it with `npx berth images ls`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec node tools/demo.mjs
