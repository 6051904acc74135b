# A stand-in for nixpkgs, for evaluating the lab's flake where nixpkgs cannot be fetched (see
# nix/eval/run.sh). It has nixpkgs' real `lib` (copied in by run.sh), and packages that are
# derivations with nixpkgs' licence records and its unfree check, so evaluating an output fails
# exactly where nixpkgs would refuse a licence. Nothing here can be built.
{
  outputs = { self }: {
    lib = import ./lib;
  };
}
