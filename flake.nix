{
  description = "Reproducible LLM-inference benchmark lab: dev shell (Rust, CUDA 12 + cuDNN, Python with PyTorch, podman), engine packages and one OCI image per engine";

  # Pinned in flake.lock (nixpkgs nixos-unstable of 2026-07-29, rust-overlay of the same day,
  # following that nixpkgs). `nix flake lock --update-input nixpkgs` moves the pin; the tests in
  # xtask/src/flake.rs keep this file in sync with the workspace.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, rust-overlay }:
    let
      system = "x86_64-linux";
      lib = nixpkgs.lib;

      # Every engine of the workspace (engines/*): Rust engines are cargo packages, the Python
      # engine is a module run by the pinned Python. A test fails when engines/ and these lists
      # disagree, so a new engine cannot land without its package and image.
      rustEngines = [ "engine-burn" "engine-candle" "engine-llamacpp" "engine-mistralrs" "engine-native" ];
      cudaEngines = [ "engine-burn" "engine-candle" "engine-llamacpp" "engine-mistralrs" ];
      pythonEngines = [ "engine-pytorch" ];

      # The GPU architecture CUDA kernels are compiled for (candle's bindgen_cuda takes one,
      # as an integer: 80 A100, 86 A10/3090, 89 L4/4090, 90 H100/H200). Pure evaluation uses
      # 90; `CUDA_COMPUTE_CAP=80 nix build --impure .#engine-candle-cuda` picks another.
      cudaComputeCap =
        let fromEnv = builtins.getEnv "CUDA_COMPUTE_CAP";
        in if fromEnv == "" then "90" else fromEnv;
      # Licence predicate and capability parsing live in nix/cuda.nix (tested without nixpkgs).
      cudaLib = import ./nix/cuda.nix;
      cudaCapability = cudaLib.capability cudaComputeCap;

      # Unfree software is allowed for the NVIDIA licences PyTorch with CUDA needs only (CUDA,
      # cuDNN, cuSPARSELt).
      cudaLicensed = cudaLib.licensed;

      pkgsFor = cudaSupport: import nixpkgs {
        inherit system;
        overlays = [ rust-overlay.overlays.default ];
        config = {
          allowUnfreePredicate = cudaLicensed;
          inherit cudaSupport;
        } // lib.optionalAttrs cudaSupport { cudaCapabilities = [ cudaCapability ]; };
      };
      pkgs = pkgsFor false;
      pkgsCuda = pkgsFor true;

      # CUDA 12 explicitly (not whatever `cudaPackages` means in this nixpkgs), with cuDNN.
      cuda = pkgsCuda.cudaPackages_12;
      cudaRoot = pkgsCuda.symlinkJoin {
        name = "cuda-12-root";
        paths = with cuda; lib.concatMap (p: [ p ] ++ lib.optional (p ? dev) p.dev) [
          cuda_nvcc
          cuda_cudart
          # `cccl` in newer nixpkgs (`cuda_cccl` is a deprecated alias there).
          (cuda.cccl or cuda.cuda_cccl)
          cuda_nvrtc
          libcublas
          libcurand
          cudnn
        ];
      };

      # The toolchain of rust-toolchain.toml (channel, components), for the shell and the builds.
      rustToolchain = pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml;
      rustPlatform = pkgs.makeRustPlatform { cargo = rustToolchain; rustc = rustToolchain; };
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
      revision = self.rev or "dirty";

      # The Python side: the PyTorch engine and the reference generator (torch, transformers,
      # safetensors, tokenizers, gguf, accelerate). The CUDA variant's torch is built with CUDA.
      pythonFor = p: p.python3.withPackages (ps: with ps; [
        torch
        transformers
        safetensors
        tokenizers
        gguf
        accelerate
        numpy
        jsonschema
      ]);
      python = pythonFor pkgs;
      pythonCuda = pythonFor pkgsCuda;

      # One engine binary. llama.cpp is compiled by its -sys crate (cmake + bindgen/libclang); the
      # x86-64-v3 flags come from .cargo/config.toml, as for cargo outside Nix.
      mkEngine = { name, cudaSupport ? false }:
        rustPlatform.buildRustPackage ({
          pname = name + lib.optionalString cudaSupport "-cuda";
          inherit version;
          src = lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" name ] ++ lib.optionals cudaSupport [ "--features" "cuda" ];
          # The tests need the model volume and the other engines: `cargo xtask test`.
          doCheck = false;
          dontUseCmakeConfigure = true;
          nativeBuildInputs = [ pkgs.cmake pkgs.pkg-config rustPlatform.bindgenHook ]
            ++ lib.optionals cudaSupport [ cuda.cuda_nvcc ];
          buildInputs = lib.optionals cudaSupport [ cudaRoot ];
          meta.mainProgram = name;
        } // lib.optionalAttrs cudaSupport {
          CUDA_COMPUTE_CAP = cudaComputeCap;
          CUDA_ROOT = "${cudaRoot}";
          CUDA_PATH = "${cudaRoot}";
        });

      # The same contract as containers/engine.Containerfile: the engine is the entrypoint, it
      # runs as 10001:10001, /models is the (read-only) model volume's mount point, /tmp is
      # writable. CUDA images find the host driver that CDI (`--device nvidia.com/gpu=all`)
      # mounts into the container.
      mkImage = { name, entrypoint, contents, env ? [ ], cudaSupport ? false }:
        pkgs.dockerTools.buildLayeredImage {
          name = "inference-lab/${name}" + lib.optionalString cudaSupport "-cuda";
          tag = "nix-${version}";
          inherit contents;
          extraCommands = ''
            mkdir -p models tmp
            chmod 1777 tmp
          '';
          config = {
            Entrypoint = entrypoint;
            User = "10001:10001";
            WorkingDir = "/tmp";
            Env = [ "HOME=/tmp" ] ++ env ++ lib.optionals cudaSupport [
              "LD_LIBRARY_PATH=/usr/lib64:/usr/lib/x86_64-linux-gnu:/run/opengl-driver/lib"
              "NVIDIA_VISIBLE_DEVICES=all"
              "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
            ];
            Labels = {
              "org.opencontainers.image.title" = name;
              "org.opencontainers.image.revision" = revision;
              "lab.engine.version" = version;
              "lab.built-by" = "nix";
            };
          };
        };

      rustImage = name: cudaSupport:
        let engine = mkEngine { inherit name cudaSupport; };
        in mkImage {
          inherit name cudaSupport;
          entrypoint = [ "${engine}/bin/${name}" ];
          contents = [ engine ];
        };

      pytorchImage = cudaSupport:
        let py = if cudaSupport then pythonCuda else python;
        in mkImage {
          name = "engine-pytorch";
          inherit cudaSupport;
          entrypoint = [ "${py}/bin/python" "-m" "lab_engine_pytorch" ];
          contents = [ py ];
          env = [
            "PYTHONPATH=${./engines/engine-pytorch}"
            "PYTHONDONTWRITEBYTECODE=1"
            "HF_HUB_OFFLINE=1"
            "TRANSFORMERS_OFFLINE=1"
          ];
        };

      forEngines = names: f: lib.listToAttrs (map (n: lib.nameValuePair n (f n)) names);

      packages =
        forEngines rustEngines (n: mkEngine { name = n; })
        // lib.mapAttrs' (n: v: lib.nameValuePair "${n}-cuda" v)
          (forEngines cudaEngines (n: mkEngine { name = n; cudaSupport = true; }))
        // lib.mapAttrs' (n: v: lib.nameValuePair "${n}-image" v)
          (forEngines rustEngines (n: rustImage n false))
        // lib.mapAttrs' (n: v: lib.nameValuePair "${n}-cuda-image" v)
          (forEngines cudaEngines (n: rustImage n true))
        // {
          engine-pytorch-image = pytorchImage false;
          engine-pytorch-cuda-image = pytorchImage true;
          xtask = mkEngine { name = "xtask"; };
          default = packages.xtask;
        };
    in
    {
      packages.${system} = packages;

      # `nix flake check` builds every CPU engine (CUDA builds need a GPU-capable builder only
      # for the run, not for the build, but take long: build them explicitly).
      checks.${system} = forEngines rustEngines (n: packages.${n});

      devShells.${system}.default = pkgsCuda.mkShell {
        packages = [
          rustToolchain
          pkgs.cmake
          pkgs.pkg-config
          pkgs.clang
          pkgs.git
          pkgs.podman
          pkgs.runc
          pkgs.skopeo
          pythonCuda
          cuda.cuda_nvcc
        ];
        LIBCLANG_PATH = "${pkgs.llvmPackages.libclang.lib}/lib";
        CUDA_ROOT = "${cudaRoot}";
        CUDA_PATH = "${cudaRoot}";
        CUDA_COMPUTE_CAP = cudaComputeCap;
        # The xtask uses this Python (after an import check) instead of creating its own venv.
        LAB_PYTHON = "${pythonCuda}/bin/python";
        # The NVIDIA driver's libcuda comes from the host: NixOS links it under
        # /run/opengl-driver, other distributions keep it in the system library directories.
        shellHook = ''
          export LD_LIBRARY_PATH="${pkgs.addDriverRunpath.driverLink}/lib:${cudaRoot}/lib''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
          for d in /usr/lib/x86_64-linux-gnu /usr/lib64; do
            if [ -e "$d/libcuda.so.1" ]; then
              mkdir -p "$PWD/target/driver-libs"
              ln -sf "$d"/libcuda.so* "$d"/libnvidia-ml.so* "$PWD/target/driver-libs/" 2>/dev/null || true
              export LD_LIBRARY_PATH="$PWD/target/driver-libs:$LD_LIBRARY_PATH"
            fi
          done
        '';
      };
    };
}
