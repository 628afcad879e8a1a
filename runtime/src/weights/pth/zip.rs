//! The zip container of PyTorch >= 1.6: `<folder>/data.pkl` (the object pickle),
//! `<folder>/data/<key>` (each storage's raw little-endian bytes, stored uncompressed),
//! `<folder>/byteorder` (since PyTorch 1.13; absent means little-endian) and version
//! records calib does not need. The folder is named after the file when it was saved,
//! so any single top-level folder is accepted.

use super::object::StorageRef;
use super::pickle::{self, Unpickled};
use super::tensor::Storages;
use std::borrow::Cow;
use std::io::{Cursor, Read};
use zip::ZipArchive;

/// Zip files start with a local file header.
pub(super) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// The storages of an open archive, read when a tensor needs them.
pub(super) struct ZipStorages<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    /// The archive's length in bytes.
    len: usize,
    folder: String,
}

/// Opens the archive and unpickles its `data.pkl`.
pub(super) fn open(bytes: &[u8]) -> Result<(Unpickled, ZipStorages<'_>), String> {
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip archive (truncated?): {e}"))?;
    let records: Vec<&str> = archive
        .file_names()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .collect();
    let record = match records[..] {
        [one] => one.to_string(),
        [] => {
            return Err(
                "a zip archive without `<folder>/data.pkl`: not a PyTorch checkpoint".into(),
            )
        }
        _ => {
            return Err(format!(
                "a zip archive with {} object pickles ({}): which one is the checkpoint?",
                records.len(),
                records.join(", ")
            ))
        }
    };
    let folder = record.trim_end_matches("/data.pkl").to_string();
    if let Ok(order) = read(
        &mut archive,
        bytes.len(),
        &format!("{folder}/byteorder"),
        None,
    ) {
        if order.trim_ascii() != b"little" {
            return Err(format!(
                "`{folder}/byteorder` says `{}`; calib reads little-endian checkpoints",
                String::from_utf8_lossy(&order).trim()
            ));
        }
    }
    let pickle = read(&mut archive, bytes.len(), &record, None)?;
    let unpickled = pickle::load(&pickle, 0).map_err(|e| format!("`{record}`: {e}"))?;
    let len = bytes.len();
    Ok((
        unpickled,
        ZipStorages {
            archive,
            len,
            folder,
        },
    ))
}

/// The member `name`, which must hold `expected` bytes when given.
fn read(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    archive_len: usize,
    name: &str,
    expected: Option<usize>,
) -> Result<Vec<u8>, String> {
    let mut file = archive
        .by_name(name)
        .map_err(|e| format!("`{name}` cannot be read from the archive: {e}"))?;
    let size = file.size();
    // Members are stored uncompressed (calib reads no other method), so a member larger
    // than the whole file is a corrupt directory; refusing it keeps a lie from sizing
    // an allocation.
    let whole = archive_len as u64;
    if size > whole {
        return Err(format!(
            "`{name}` claims {size} bytes in a file of {whole} (corrupt directory?)"
        ));
    }
    if let Some(expected) = expected {
        if size != expected as u64 {
            return Err(format!(
                "`{name}` holds {size} bytes but its storage needs {expected}"
            ));
        }
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("`{name}` is corrupt: {e}"))?;
    Ok(bytes)
}

impl Storages for ZipStorages<'_> {
    fn bytes(&mut self, storage: &StorageRef) -> Result<Cow<'_, [u8]>, String> {
        let name = format!("{}/data/{}", self.folder, storage.key);
        let expected = storage
            .numel
            .checked_mul(storage.element.size_bytes())
            .ok_or_else(|| format!("storage `{}` is too large to count", storage.key))?;
        read(&mut self.archive, self.len, &name, Some(expected)).map(Cow::Owned)
    }
}
