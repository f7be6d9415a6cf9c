//! Single saved objects: a value without history, stored whole and replaced
//! atomically (the installed view, the ragged trims of a shard).
//!
//! File format: `b"DPOB"`, the payload length as `u64` LE, a CRC32 of the
//! payload as `u32` LE, then the payload (bincode). The file is always written
//! through [`Storage::replace`], so it is either the old or the new object.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result, StorageError};
use crate::storage::Storage;

const MAGIC: &[u8; 4] = b"DPOB";
const HEADER_LEN: usize = 4 + 8 + 4;

/// Frames `payload` with the magic, length and checksum.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the framing written by [`frame`] and returns the payload.
pub(crate) fn unframe<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = |reason: &str| Error::Corrupt {
        name: name.to_string(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(corrupt("missing or wrong header"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[4..12]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[12..16]);
    let payload = &bytes[HEADER_LEN..];
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err(corrupt("length does not match the file size"));
    }
    if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(payload)
}

/// Saves `value` under `name`, atomically and durably replacing any previous
/// object of that name.
pub fn save_object<S, T>(storage: &S, name: &str, value: &T) -> Result<()>
where
    S: Storage + ?Sized,
    T: Serialize + ?Sized,
{
    let payload = bincode::serialize(value).map_err(|e| Error::codec(name, e))?;
    storage.replace(name, &frame(&payload))?;
    Ok(())
}

/// Loads the object saved under `name`: `Ok(None)` if there is none, a
/// [`Error::Corrupt`] if its checksum or framing is wrong, a [`Error::Codec`]
/// if it does not decode as `T`.
pub fn load_object<S, T>(storage: &S, name: &str) -> Result<Option<T>>
where
    S: Storage + ?Sized,
    T: DeserializeOwned,
{
    let bytes = match storage.read_all(name) {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let payload = unframe(name, &bytes)?;
    bincode::deserialize(payload)
        .map(Some)
        .map_err(|e| Error::codec(name, e))
}
