//! A zip read by ranges of an object: its central directory from blocks already held (a tail,
//! a prefix) and the few more it asks for, then small records read together with their local
//! headers, nearby ones in one request.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;

use super::{
    Directory, DirectoryReader, LOCAL_HEADER_LEN, Step, ZipEntry, ZipError, payload_offset,
};
use crate::error::{Error, Result};
use crate::fetch::{Object, coalesce};

/// Records this close to each other are read in the same request.
const NEARBY: u64 = 64 << 10;

/// Room for a local header's extra field when a record's payload is read with its header.
const EXTRA_ROOM: u64 = 256;

/// A zip at a range of an object, its directory read.
pub(crate) struct RangedZip {
    object: Object,
    /// Where the zip starts in the object: directory offsets count from here.
    base: u64,
    /// Blocks of the object already read, at absolute offsets.
    held: Vec<(u64, Bytes)>,
    directory: Directory,
}

/// A range that does not hold a zip: what is wrong, and its first bytes (a bare pickle, say).
pub(crate) struct NotAZip {
    pub problem: ZipError,
    pub first: Bytes,
}

impl RangedZip {
    /// Reads the directory of the zip at `range` of `object`, from the blocks `held` (at
    /// absolute offsets; they should include the zip's tail) and whatever more it asks for.
    ///
    /// # Errors
    ///
    /// The reads' errors; [`NotAZip`] (inside `Ok`) for bytes that are not a valid zip.
    pub(crate) async fn open(
        object: &Object,
        range: Range<u64>,
        held: Vec<(u64, Bytes)>,
    ) -> Result<std::result::Result<Self, NotAZip>> {
        let base = range.start;
        let mut reader = DirectoryReader::new(range.end - base);
        for (start, bytes) in &held {
            reader.supply(start - base, bytes.clone());
        }
        loop {
            match reader.advance() {
                Ok(Step::Done(directory)) => {
                    return Ok(Ok(Self {
                        object: object.clone(),
                        base,
                        held,
                        directory,
                    }));
                }
                Ok(Step::Read(r)) => {
                    let bytes = object.read_range(base + r.start..base + r.end).await?;
                    reader.supply(r.start, bytes);
                }
                Err(problem) => {
                    let first = match held.iter().find(|(start, _)| *start == base) {
                        Some((_, bytes)) => bytes.slice(..bytes.len().min(16)),
                        None => object.read_range(base..range.end.min(base + 16)).await?,
                    };
                    return Ok(Err(NotAZip { problem, first }));
                }
            }
        }
    }

    /// The directory.
    pub(crate) fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Where the zip starts in the object.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The object.
    pub(crate) fn object(&self) -> &Object {
        &self.object
    }

    fn get(&self, range: &Range<u64>) -> Option<Bytes> {
        self.held.iter().find_map(|(start, bytes)| {
            let end = start + bytes.len() as u64;
            (*start <= range.start && range.end <= end)
                .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
        })
    }

    /// The payloads of `entries` (stored, CRC-checked with `verify`), reading nearby ones
    /// together.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a compressed entry; [`Error::Corrupt`] for a local header that
    /// does not match, a payload past the end, or a CRC that does not match; the reads' errors.
    pub(crate) async fn records(
        &mut self,
        entries: &[ZipEntry],
        verify: bool,
    ) -> Result<HashMap<String, Bytes>> {
        let uri = self.object.location().uri();
        let size = self.object.info().size;
        let base = self.base;
        // What to read: each entry's header and payload, with room for the extra field.
        let spans: Vec<Range<u64>> = entries
            .iter()
            .map(|e| {
                let start = base.saturating_add(e.header_offset);
                let end = (start + LOCAL_HEADER_LEN + e.name.len() as u64)
                    .saturating_add(EXTRA_ROOM)
                    .saturating_add(e.compressed_size)
                    .min(size);
                start.min(end)..end
            })
            .filter(|r| self.get(r).is_none())
            .collect();
        let merged = coalesce(&spans, NEARBY);
        if !merged.is_empty() {
            let read = self.object.read_ranges(&merged).await?;
            self.held.extend(merged.iter().map(|r| r.start).zip(read));
        }
        let mut out = HashMap::new();
        for entry in entries {
            if let Some(method) = &entry.compression {
                return Err(compressed(&uri, entry, method));
            }
            let header_start = base.saturating_add(entry.header_offset).min(size);
            let header_end = (header_start + LOCAL_HEADER_LEN + entry.name.len() as u64).min(size);
            let header = self.get(&(header_start..header_end)).unwrap_or_default();
            let relative =
                payload_offset(entry, &header).map_err(|problem| Error::corrupt(&uri, problem))?;
            super::check_extent(entry, relative)
                .map_err(|problem| Error::corrupt(&uri, problem))?;
            let payload = relative.saturating_add(base);
            let range = payload..payload.saturating_add(entry.size);
            if range.end > size {
                return Err(Error::corrupt(
                    &uri,
                    ZipError::Truncated { offset: range.end },
                ));
            }
            let data = match self.get(&range) {
                Some(data) => data,
                None => {
                    let data = self.object.read_range(range.clone()).await?;
                    self.held.push((range.start, data.clone()));
                    data
                }
            };
            if verify {
                super::check_crc(entry, &data).map_err(|e| Error::corrupt(&uri, e))?;
            }
            out.insert(entry.name.clone(), data);
        }
        Ok(out)
    }
}

/// What a compressed entry gets.
fn compressed(uri: &str, entry: &ZipEntry, method: &str) -> Error {
    Error::Unsupported {
        uri: uri.to_owned(),
        what: format!(
            "entry `{}` is compressed ({method}); ckptio reads stored entries, which torch writes",
            entry.name
        ),
    }
}
