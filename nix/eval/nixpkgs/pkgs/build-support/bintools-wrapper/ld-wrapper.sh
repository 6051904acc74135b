# stand-in: rust-overlay refers to this nixpkgs file; it is never run here
