//! What a model file or folder *is*, cheaply: each file's size and a hash of its first and last
//! MiB (for a folder, every file in it, sorted by name). The replay cache keys on it, and a
//! training run's fingerprint records it, without hashing gigabytes of weights.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The content identity of the model at `path` (not its path), as bytes to hash further.
pub fn content_identity(path: &Path) -> Result<Vec<u8>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut id = Vec::new();
    for f in files {
        let meta = std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?;
        id.extend_from_slice(&meta.len().to_le_bytes());
        let mut file = std::fs::File::open(&f).map_err(|e| Error::io(&f, e))?;
        let mut buf = vec![0u8; (meta.len() as usize).min(1 << 20)];
        file.read_exact(&mut buf).map_err(|e| Error::io(&f, e))?;
        id.extend_from_slice(&Sha256::digest(&buf));
        if meta.len() > (2 << 20) {
            file.seek(SeekFrom::End(-(1 << 20)))
                .map_err(|e| Error::io(&f, e))?;
            file.read_exact(&mut buf).map_err(|e| Error::io(&f, e))?;
            id.extend_from_slice(&Sha256::digest(&buf));
        }
    }
    Ok(id)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
