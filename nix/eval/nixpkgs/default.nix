# `import nixpkgs { system, overlays, config }` of the stand-in (see flake.nix). Mirrors what the
# lab's flake and rust-overlay use: stdenv and its platforms, callPackage, fetchurl, symlinkJoin,
# makeRustPlatform, mkShell, dockerTools, python3.withPackages, cudaPackages_12 (with `cccl` and the
# deprecated `cuda_cccl` alias) and nixpkgs' NVIDIA licence records.
{ system ? "x86_64-linux", overlays ? [ ], config ? { }, ... }:
let
  lib = import ./lib;

  # nixpkgs' licence records (shortName, free) for what the flake pulls in.
  licenses = {
    mit = { shortName = "mit"; fullName = "MIT License"; free = true; };
    bsd3 = { shortName = "bsd3"; fullName = "BSD 3-clause"; free = true; };
    asl20 = { shortName = "asl20"; fullName = "Apache License 2.0"; free = true; };
    unfree = { shortName = "unfree"; fullName = "Unfree"; free = false; };
    cuda = { shortName = "CUDA EULA"; fullName = "CUDA Toolkit End User License Agreement (EULA)"; free = false; };
    cudnn = { shortName = "cuDNN EULA"; fullName = "cuDNN Software License Agreement"; free = false; };
    cusparselt = { shortName = "cuSPARSELt EULA"; fullName = "cuSPARSELt End User License Agreement"; free = false; };
    cutensor = { shortName = "cuTENSOR EULA"; fullName = "cuTENSOR End User License Agreement"; free = false; };
  };

  # nixpkgs' check-meta, reduced to the unfree rule.
  allowed = attrs:
    let
      ls = lib.toList (attrs.meta.license or [ ]);
      unfree = builtins.any (l: !(l.free or true)) ls;
    in
    !unfree || (config.allowUnfree or false) || (config.allowUnfreePredicate or (_: false)) attrs;

  # Every derivation: its dependencies are part of it, so instantiating one checks them all.
  mkDrv = attrs:
    let
      name = attrs.name or "${attrs.pname}-${attrs.version or "0"}";
      deps = lib.flatten (map (k: attrs.${k} or [ ]) [
        "buildInputs" "nativeBuildInputs" "propagatedBuildInputs" "packages" "paths" "contents" "deps"
      ]);
      drv = derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" "echo stand-in: nothing here can be built; exit 1" ];
        deps = map toString deps;
        env = builtins.toJSON (lib.filterAttrs (k: v: builtins.isString v) attrs);
      };
      licenceNames = lib.concatMapStringsSep ", " (l: l.shortName or "?") (lib.toList (attrs.meta.license or [ ]));
      checked =
        if allowed attrs then drv
        else throw "Package ‘${name}’ has an unfree license (‘${licenceNames}’), refusing to evaluate.";
    in
    checked // {
      inherit name;
      meta = attrs.meta or { };
      passthru = attrs.passthru or { };
      outPath = checked.outPath;
      drvPath = checked.drvPath;
      dev = checked;
      lib = checked;
      out = checked;
      override = f: mkDrv (attrs // (if builtins.isFunction f then f attrs else f));
      overrideAttrs = f: mkDrv (attrs // (if builtins.isFunction f then f attrs else f));
    } // (attrs.passthru or { });

  pkg = name: license: extra: mkDrv ({ inherit name; meta.license = license; } // extra);

  platform = {
    inherit system;
    config = "x86_64-unknown-linux-gnu";
    isLinux = true;
    isDarwin = false;
    isx86_64 = true;
    isAarch64 = false;
    isWindows = false;
    isWasm = false;
    isStatic = false;
    isi686 = false;
    isRiscV = false;
    is64bit = true;
    isGnu = true;
    isMusl = false;
    parsed = { cpu.name = "x86_64"; kernel.name = "linux"; };
    rust = { rustcTarget = "x86_64-unknown-linux-gnu"; rustcTargetSpec = "x86_64-unknown-linux-gnu"; };
  };

  base = self: {
    inherit lib system config;
    path = ./.;
    stdenv = {
      mkDerivation = a: mkDrv (if builtins.isFunction a then a { } else a);
      hostPlatform = platform;
      targetPlatform = platform;
      buildPlatform = platform;
      isLinux = true;
      isDarwin = false;
      cc = pkg "gcc-wrapper" licenses.mit { };
      shell = "/bin/sh";
    };
    stdenvNoCC = self.stdenv;
    callPackage = lib.callPackageWith self;
    fetchurl = a: mkDrv { name = a.name or (baseNameOf (a.url or (builtins.head a.urls))); meta.license = [ ]; };
    symlinkJoin = a: mkDrv (a // { meta = a.meta or { }; });
    runCommand = name: env: script: mkDrv (env // { inherit name; });
    writeShellScriptBin = name: text: mkDrv { inherit name; };
    mkShell = a: mkDrv (a // { name = a.name or "nix-shell"; });
    makeRustPlatform = { cargo, rustc }: {
      bindgenHook = pkg "rust-bindgen-hook" licenses.bsd3 { };
      # Reads the lock file as nixpkgs does (a git source would need `outputHashes`).
      buildRustPackage = a:
        let
          lock = builtins.fromTOML (builtins.readFile a.cargoLock.lockFile);
          git = builtins.filter (p: lib.hasPrefix "git+" (p.source or "")) (lock.package or [ ]);
        in
        if git != [ ] && !(a.cargoLock ? outputHashes)
        then throw "cargoLock: git sources need outputHashes: ${toString (map (p: p.name) git)}"
        else mkDrv (a // { deps = [ cargo rustc ]; meta = (a.meta or { }) // { license = a.meta.license or [ ]; }; });
    };
    dockerTools.buildLayeredImage = a:
      assert a.config ? Entrypoint && a.config ? User;
      mkDrv { name = "docker-image-${baseNameOf a.name}.tar.gz"; contents = a.contents or [ ]; meta.license = [ ]; };
    addDriverRunpath.driverLink = "/run/opengl-driver";
    llvmPackages.libclang = pkg "clang-lib" licenses.asl20 { };
    python3 = pkg "python3" licenses.mit {
      passthru.withPackages = f: mkDrv { name = "python3-env"; deps = f self.python3Packages; meta.license = [ ]; };
    };
    python3Packages = lib.genAttrs [ "transformers" "safetensors" "tokenizers" "gguf" "accelerate" "numpy" "jsonschema" ]
      (n: pkg n licenses.asl20 { })
    // {
      # torch follows config.cudaSupport, with the CUDA libraries nixpkgs' torch takes.
      torch = pkg "torch" licenses.bsd3 {
        buildInputs = lib.optionals (config.cudaSupport or false) (with self.cudaPackages; [
          cuda_cudart libcublas cudnn libcusparse_lt nccl cuda_nvrtc
        ]);
      };
    };
    cudaPackages = self.cudaPackages_12;
    cudaPackages_12 = rec {
      cuda_nvcc = pkg "cuda_nvcc" licenses.cuda { };
      cuda_cudart = pkg "cuda_cudart" licenses.cuda { };
      cccl = pkg "cccl" licenses.cuda { };
      cuda_cccl = lib.warn "cudaPackages.cuda_cccl has been renamed to cccl" cccl;
      cuda_nvrtc = pkg "cuda_nvrtc" licenses.cuda { };
      libcublas = pkg "libcublas" licenses.cuda { };
      libcurand = pkg "libcurand" licenses.cuda { };
      cudnn = pkg "cudnn" licenses.cudnn { };
      libcusparse_lt = pkg "libcusparse_lt" licenses.cusparselt { };
      cusparselt = libcusparse_lt;
      cutensor = pkg "cutensor" licenses.cutensor { };
      nccl = pkg "nccl" licenses.bsd3 { };
    };
  } // lib.genAttrs [
    "cmake" "pkg-config" "clang" "git" "podman" "runc" "skopeo" "bash" "curl" "rustc" "makeWrapper"
    "gnutar" "autoPatchelfHook" "bintools" "lndir" "zlib" "gccForLibs"
  ] (n: pkg n licenses.mit { }) // {
    pkgsTargetTarget = self;
    pkgsHostHost = self;
    pkgsBuildHost = self;
    buildPackages = self;
  };

  pkgs = lib.fix (lib.foldl' (acc: o: lib.extends o acc) base overlays);
in
pkgs
