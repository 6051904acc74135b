#!/usr/bin/env bash
# Evaluates every output of the lab's flake where nixpkgs cannot be fetched: nixpkgs is replaced by
# the stand-in in nix/eval/nixpkgs (nixpkgs' real lib, packages carrying nixpkgs' licence records
# and its unfree check), rust-overlay by a source tree of the pinned revision. Each output's
# derivation is instantiated, which runs the licence check of it and of everything it depends
# on, rust-overlay's toolchain resolution from rust-toolchain.toml and the Cargo.lock reading.
#
#   nix/eval/run.sh NIX RUST_OVERLAY_DIR NIXPKGS_LIB_DIR
#
# NIX: a `nix` of at least 2.18 (nixpkgs' minimum; Debian trixie's nix-bin 2.26 works unpacked
# with `apt-get download` + `dpkg-deb -x`); RUST_OVERLAY_DIR: oxalica/rust-overlay at the revision
# in flake.lock; NIXPKGS_LIB_DIR: a checkout of nix-community/nixpkgs.lib (nixpkgs' lib/).
set -euo pipefail
nix=$1 overlay=$2 nixlib=$3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/nix/eval/nixpkgs" "$work/nixpkgs"
cp -r "$nixlib/lib" "$work/nixpkgs/lib"
export NIX_CONFIG="experimental-features = nix-command flakes
sandbox = false
substituters =
build-users-group ="
store="$work/store"
"$nix" --store "$store" eval --json \
  --override-input nixpkgs "path:$work/nixpkgs" \
  --override-input rust-overlay "path:$overlay" \
  "git+file://$root#." --apply '
    flake:
    let
      sys = "x86_64-linux";
      drv = d: d.drvPath;
    in {
      packages = builtins.mapAttrs (_: drv) flake.packages.${sys};
      checks = builtins.mapAttrs (_: drv) flake.checks.${sys};
      devShell = drv flake.devShells.${sys}.default;
    }'
