# The flake's CUDA settings as plain functions over builtins, so they evaluate (and are tested,
# xtask/src/flake.rs) with any Nix and without nixpkgs.
rec {
  # The unfree NVIDIA licences the flake accepts, by nixpkgs' shortNames: CUDA itself, cuDNN, and
  # cuSPARSELt (a build input of PyTorch with CUDA). Every other unfree licence is refused.
  nvidiaLicences = [ "CUDA EULA" "cuDNN EULA" "cuSPARSELt EULA" ];

  toList = x: if builtins.isList x then x else [ x ];

  # nixpkgs' `allowUnfreePredicate`: every licence of the package is free or one of the above.
  licensed = pkg:
    builtins.all
      (l: (l.free or true) || builtins.elem (l.shortName or "") nvidiaLicences)
      (toList (pkg.meta.license or [ ]));

  # A compute capability as candle's bindgen_cuda takes it ("90", "100") in nixpkgs' form
  # ("9.0", "10.0"): the last digit is the minor version.
  capability = cc:
    let n = builtins.stringLength cc;
    in
    if builtins.match "[1-9][0-9]{1,2}" cc == null
    then throw "CUDA_COMPUTE_CAP=${cc}: expected the compute capability as digits (80, 89, 90, 100, 120)"
    else "${builtins.substring 0 (n - 1) cc}.${builtins.substring (n - 1) 1 cc}";
}
