#!/usr/bin/env bash
# Runs a lab command on a GPU runner: directly, or inside the flake's dev shell (pinned CUDA 12,
# cuDNN, Rust, Python) when USE_NIX is true.
set -euo pipefail
if [ "${USE_NIX:-false}" = true ]; then
  exec nix develop --command "$@"
fi
exec "$@"
