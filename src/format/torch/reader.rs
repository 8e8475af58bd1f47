//! Reading `torch.save` zips (PyTorch ≥ 1.6) lazily: the zip's tail (one request: end records
//! and central directory), then `data.pkl` with the small records beside it (one more); tensors
//! become byte ranges of their storage records, whose payload offsets follow torch's alignment
//! and are confirmed by the local header when read. A torch file already in memory (a small
//! item of a distributed checkpoint) is read the same way, without requests.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::codec::{self, Storages};
use super::{TorchError, legacy_or_zip_error, unsupported};
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::format::ReadOptions;
use crate::format::object::source;
use crate::format::pickle::{self, Policy};
use crate::format::zip::{self, Directory, DirectoryReader, Step, ZipAnchor, ZipEntry};
use crate::location::Location;
use crate::tree::{ByteRange, Check, Checksum, Dict, Inline, Node, Source, StateTree, TensorData};

/// Records next to `data.pkl` this close are read in the same request.
const NEARBY: u64 = 64 << 10;

/// Room for a local header's extra field when a record's payload is read with its header.
const EXTRA_ROOM: u64 = 256;

/// Opens the torch file at `location`: the zip's tail, then `data.pkl` and its neighbours.
///
/// # Errors
///
/// [`Error::Corrupt`] for a broken archive or records that do not fit together,
/// [`Error::Unsafe`] for a refused global, [`Error::Unsupported`] for a legacy or TorchScript
/// file; the reads' errors.
pub(crate) async fn open(
    location: &Location,
    fetch: FetchOptions,
    options: ReadOptions,
) -> Result<StateTree> {
    let (object, start, tail) = Object::open_suffix(location, zip::TAIL_READ, fetch).await?;
    let size = object.info().size;
    read(&object, 0..size, vec![(start, tail)], options).await
}

/// Opens the torch file `object`, whose first bytes `first` were read already (they often hold
/// `data.pkl`, which torch writes first): one more request for the zip's tail, none when
/// `first` is the whole file.
///
/// # Errors
///
/// As [`open`].
pub(crate) async fn open_object(
    object: &Object,
    first: Bytes,
    options: ReadOptions,
) -> Result<StateTree> {
    let size = object.info().size;
    let mut held = vec![(0, first.clone())];
    if (first.len() as u64) < size {
        let tail = size.saturating_sub(zip::TAIL_READ).max(first.len() as u64)..size;
        held.push((tail.start, object.read_range(tail).await?));
    }
    read(object, 0..size, held, options).await
}

/// Opens the torch file at `range` of `object` (a chunk of a distributed checkpoint, which
/// concatenates them): the same reads as [`open`], within the range.
///
/// # Errors
///
/// As [`open`].
pub(crate) async fn open_embedded(
    object: &Object,
    range: Range<u64>,
    options: ReadOptions,
) -> Result<StateTree> {
    let tail = range.end.saturating_sub(zip::TAIL_READ).max(range.start)..range.end;
    let bytes = object.read_range(tail.clone()).await?;
    read(object, range, vec![(tail.start, bytes)], options).await
}

/// Reads the torch file at `range` of `object`, given blocks already read (at absolute
/// offsets), the last of which ends where the file does.
async fn read(
    object: &Object,
    range: Range<u64>,
    held: Vec<(u64, Bytes)>,
    options: ReadOptions,
) -> Result<StateTree> {
    let uri = object.location().uri();
    let base = range.start;
    let directory = read_directory(object, range, &held).await?;
    let mut blocks = Blocks {
        object: object.clone(),
        base,
        held,
    };
    let archive = Archive::find(&directory, &uri)?;
    let records = blocks
        .records(&archive.small_records(), options.verify)
        .await?;
    let big_endian = archive.big_endian(&records, &uri)?;
    let alignment = archive.alignment(&records, &uri)?;
    let storages = Remote {
        source: source(object),
        base,
        directory: &directory,
        archive: &archive.prefix,
        alignment,
        big_endian,
        verify: options.verify,
    };
    let pkl = &records[&archive.pickle.name];
    to_tree(pkl, &archive.pickle.name, &storages, options, &uri)
}

/// Reads a whole torch file held in memory; `name` says where it came from in messages.
///
/// # Errors
///
/// As [`open`].
pub(crate) fn read_bytes(data: &Bytes, name: &str, options: ReadOptions) -> Result<StateTree> {
    let directory = zip::read_directory(data).map_err(|e| legacy_or_zip_error(name, data, e))?;
    let archive = Archive::find(&directory, name)?;
    let record = |entry: &ZipEntry| -> Result<Bytes> {
        let at = usize::try_from(entry.header_offset)
            .ok()
            .and_then(|at| data.get(at..))
            .unwrap_or_default();
        let start = zip::payload_offset(entry, at).map_err(|e| Error::corrupt(name, e))?;
        let end = start.checked_add(entry.size);
        let bytes = end
            .and_then(|end| data.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?))
            .ok_or_else(|| {
                Error::corrupt(
                    name,
                    zip::ZipError::Truncated {
                        offset: end.unwrap_or(u64::MAX),
                    },
                )
            })?;
        if options.verify && entry.crc32 != 0 && crc32fast::hash(bytes) != entry.crc32 {
            return Err(corrupt_record(name, entry, bytes));
        }
        Ok(data.slice_ref(bytes))
    };
    let mut records = HashMap::new();
    for entry in archive.small_records() {
        records.insert(entry.name.clone(), record(entry)?);
    }
    let storages = InMemory {
        directory: &directory,
        archive: &archive.prefix,
        big_endian: archive.big_endian(&records, name)?,
        record: &record,
        origin: Arc::from(name),
    };
    let pkl = &records[&archive.pickle.name];
    to_tree(pkl, &archive.pickle.name, &storages, options, name)
}

/// The pickle `data` (the record `record` of `uri`) as a tree over `storages`.
fn to_tree(
    data: &[u8],
    record: &str,
    storages: &dyn Storages,
    options: ReadOptions,
    uri: &str,
) -> Result<StateTree> {
    let policy = Policy {
        strict: options.strict,
        known: |g| codec::is_known(g) || pickle::convert::is_known(g),
    };
    let heap = pickle::parse(data, &policy).map_err(|e| pickle::error(uri, record, e))?;
    let root = codec::to_node(&heap, storages, uri)
        .map_err(|e| Error::corrupt(uri, TorchError(format!("`{record}`: {e}"))))?;
    Ok(match root {
        Node::Dict(dict) => StateTree::from_dict(dict),
        other => StateTree::from_dict(Dict::from([(String::new(), other)])),
    })
}

/// The records of one `torch.save` archive: the top folder and its `data.pkl`.
struct Archive<'a> {
    directory: &'a Directory,
    pickle: &'a ZipEntry,
    /// The folder, with its `/` (torch names it after the file).
    prefix: String,
}

impl<'a> Archive<'a> {
    fn find(directory: &'a Directory, uri: &str) -> Result<Self> {
        // `data.pkl` at the top of the archive: any one folder deep; the shallowest wins.
        let pickle = directory
            .entries()
            .iter()
            .filter(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"))
            .min_by_key(|e| e.name.matches('/').count())
            .ok_or_else(|| {
                let torchscript = directory
                    .entries()
                    .iter()
                    .any(|e| e.name == "constants.pkl" || e.name.ends_with("/constants.pkl"));
                if torchscript {
                    unsupported(
                        uri,
                        "a TorchScript archive (torch.jit.save), which holds code, not a state \
                         dict; save the state_dict with torch.save instead",
                    )
                } else {
                    Error::corrupt(
                        uri,
                        TorchError(
                            "a zip without a `data.pkl`: not a torch.save checkpoint".into(),
                        ),
                    )
                }
            })?;
        let prefix = pickle.name.trim_end_matches("data.pkl").to_owned();
        Ok(Self {
            directory,
            pickle,
            prefix,
        })
    }

    fn named(&self, name: &str) -> Option<&'a ZipEntry> {
        self.directory.get(&format!("{}{name}", self.prefix))
    }

    /// `data.pkl` and the small records read with it.
    fn small_records(&self) -> Vec<&'a ZipEntry> {
        [
            Some(self.pickle),
            self.named("byteorder"),
            self.named(".storage_alignment"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn big_endian(&self, records: &HashMap<String, Bytes>, uri: &str) -> Result<bool> {
        match self.named("byteorder").map(|e| &records[&e.name][..]) {
            None | Some(b"little") => Ok(false),
            Some(b"big") => Ok(true),
            Some(other) => Err(Error::corrupt(
                uri,
                TorchError(format!(
                    "`{}byteorder` says {:?}, not little or big",
                    self.prefix,
                    String::from_utf8_lossy(other)
                )),
            )),
        }
    }

    fn alignment(&self, records: &HashMap<String, Bytes>, uri: &str) -> Result<u64> {
        match self
            .named(".storage_alignment")
            .map(|e| &records[&e.name][..])
        {
            None => Ok(64),
            Some(raw) => std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|a| (1..=1 << 20).contains(a))
                .ok_or_else(|| {
                    Error::corrupt(
                        uri,
                        TorchError(format!(
                            "`{}.storage_alignment` is not a number",
                            self.prefix
                        )),
                    )
                }),
        }
    }

    /// The record of storage `key`, stored uncompressed, and big enough for `bytes`.
    fn storage(
        directory: &'a Directory,
        prefix: &str,
        key: &str,
        bytes: &Range<u64>,
    ) -> Result<&'a ZipEntry, String> {
        let name = format!("{prefix}data/{key}");
        let entry = directory.get(&name).ok_or_else(|| {
            format!("a tensor refers to storage `{key}`, which has no record `{name}`")
        })?;
        if let Some(method) = &entry.compression {
            return Err(format!("storage record `{name}` is compressed ({method})"));
        }
        if bytes.end > entry.size {
            return Err(format!(
                "a tensor reaches byte {} of storage `{key}`, which has {} bytes",
                bytes.end, entry.size
            ));
        }
        Ok(entry)
    }
}

/// Storages as ranges of a remote object, at offsets predicted from the directory.
struct Remote<'a> {
    source: Arc<dyn Source>,
    /// Where the zip starts in the object.
    base: u64,
    directory: &'a Directory,
    archive: &'a str,
    alignment: u64,
    big_endian: bool,
    verify: bool,
}

impl Storages for Remote<'_> {
    fn data(&self, key: &str, bytes: Range<u64>) -> Result<TensorData, String> {
        let entry = Archive::storage(self.directory, self.archive, key, &bytes)?;
        let beyond = || format!("storage record `{}` lies beyond any offset", entry.name);
        let payload = entry
            .torch_payload_offset(self.alignment)
            .and_then(|p| p.checked_add(self.base))
            .ok_or_else(beyond)?;
        let mut anchored = entry.clone();
        anchored.header_offset = entry
            .header_offset
            .checked_add(self.base)
            .ok_or_else(beyond)?;
        let span = payload..payload.checked_add(entry.size).ok_or_else(beyond)?;
        // A CRC of 0 is what `torch.save(..., compute_crc32=False)` records: nothing to check.
        let check = (self.verify && entry.crc32 != 0).then(|| Check {
            span: span.clone(),
            checksum: Checksum::Crc32(entry.crc32),
            record: Arc::from(entry.name.as_str()),
        });
        let range = if bytes.is_empty() {
            payload..payload
        } else {
            payload + bytes.start..payload + bytes.end
        };
        Ok(TensorData::Range(ByteRange {
            big_endian: self.big_endian,
            check,
            anchor: Some(Arc::new(ZipAnchor {
                entry: anchored,
                payload,
            })),
            ..ByteRange::new(Arc::clone(&self.source), range)
        }))
    }
}

/// Storages as slices of an archive held in memory (each checked when it was sliced).
struct InMemory<'a> {
    directory: &'a Directory,
    archive: &'a str,
    big_endian: bool,
    record: &'a dyn Fn(&ZipEntry) -> Result<Bytes>,
    origin: Arc<str>,
}

impl Storages for InMemory<'_> {
    fn data(&self, key: &str, bytes: Range<u64>) -> Result<TensorData, String> {
        let entry = Archive::storage(self.directory, self.archive, key, &bytes)?;
        let record = (self.record)(entry).map_err(|e| e.to_string())?;
        let slice = record.slice(bytes.start as usize..bytes.end as usize);
        Ok(TensorData::Inline(Inline {
            bytes: slice,
            big_endian: self.big_endian,
            origin: Arc::clone(&self.origin),
        }))
    }
}

/// Reads the directory of the zip at `range` of `object`, starting from blocks already held
/// (at absolute offsets). Offsets in the directory are relative to the zip's start.
async fn read_directory(
    object: &Object,
    range: Range<u64>,
    held: &[(u64, Bytes)],
) -> Result<Directory> {
    let uri = object.location().uri();
    let base = range.start;
    let mut reader = DirectoryReader::new(range.end - base);
    for (start, bytes) in held {
        reader.supply(start - base, bytes.clone());
    }
    loop {
        match reader.advance() {
            Ok(Step::Done(directory)) => return Ok(directory),
            Ok(Step::Read(r)) => {
                let bytes = object.read_range(base + r.start..base + r.end).await?;
                reader.supply(r.start, bytes);
            }
            Err(problem) => {
                // A pre-1.6 torch file is a bare pickle: say so, rather than "not a zip".
                let first = match held.iter().find(|(start, _)| *start == base) {
                    Some((_, bytes)) => bytes.slice(..bytes.len().min(16)),
                    None => object.read_range(base..range.end.min(base + 16)).await?,
                };
                return Err(legacy_or_zip_error(&uri, &first, problem));
            }
        }
    }
}

fn corrupt_record(uri: &str, entry: &ZipEntry, data: &[u8]) -> Error {
    Error::corrupt(
        uri,
        TorchError(format!(
            "entry `{}` is corrupt: expected CRC-32 {:08x}, computed {:08x}",
            entry.name,
            entry.crc32,
            crc32fast::hash(data)
        )),
    )
}

/// Byte blocks of one object already read (at absolute offsets), and reads of small records
/// of the zip starting at `base` through them.
struct Blocks {
    object: Object,
    base: u64,
    held: Vec<(u64, Bytes)>,
}

impl Blocks {
    fn get(&self, range: &Range<u64>) -> Option<Bytes> {
        self.held.iter().find_map(|(start, bytes)| {
            let end = start + bytes.len() as u64;
            (*start <= range.start && range.end <= end)
                .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
        })
    }

    /// The payloads of `entries` (stored, CRC-checked), reading nearby ones together.
    async fn records(
        &mut self,
        entries: &[&ZipEntry],
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
                let end = (start + zip::LOCAL_HEADER_LEN + e.name.len() as u64)
                    .saturating_add(EXTRA_ROOM)
                    .saturating_add(e.compressed_size)
                    .min(size);
                start.min(end)..end
            })
            .filter(|r| self.get(r).is_none())
            .collect();
        let merged = crate::fetch::coalesce(&spans, NEARBY);
        if !merged.is_empty() {
            let read = self.object.read_ranges(&merged).await?;
            self.held.extend(merged.iter().map(|r| r.start).zip(read));
        }
        let mut out = HashMap::new();
        for entry in entries {
            if let Some(method) = &entry.compression {
                return Err(unsupported(
                    &uri,
                    &format!(
                        "entry `{}` is compressed ({method}); torch writes stored entries, \
                         and ckptio reads only those",
                        entry.name
                    ),
                ));
            }
            let header_start = base.saturating_add(entry.header_offset).min(size);
            let header_end =
                (header_start + zip::LOCAL_HEADER_LEN + entry.name.len() as u64).min(size);
            let header = self.get(&(header_start..header_end)).unwrap_or_default();
            let payload = zip::payload_offset(entry, &header)
                .map_err(|problem| Error::corrupt(&uri, problem))?
                .saturating_add(base);
            let range = payload..payload.saturating_add(entry.size);
            if range.end > size {
                return Err(Error::corrupt(
                    &uri,
                    zip::ZipError::Truncated { offset: range.end },
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
            if verify && entry.crc32 != 0 && crc32fast::hash(&data) != entry.crc32 {
                return Err(corrupt_record(&uri, entry, &data));
            }
            out.insert(entry.name.clone(), data);
        }
        Ok(out)
    }
}
