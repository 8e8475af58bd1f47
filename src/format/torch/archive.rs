//! A `torch.save` archive: a zip whose top folder holds `data.pkl`, `byteorder`,
//! `.storage_alignment` and one `data/<key>` record per storage. [`read`] reads one at a range
//! of an object (a `.pt` file, or a chunk of a distributed checkpoint); [`read_bytes`] one held
//! in memory. What the records mean is pure: which to read, how storages become tensor data.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::codec::{self, Storages};
use super::{TorchError, legacy_or_zip_error, unsupported};
use crate::error::{Error, Result};
use crate::fetch::Object;
use crate::format::ReadOptions;
use crate::format::object::TooLargeFile;
use crate::format::object::source;
use crate::format::pickle::limits::MAX_PICKLE_BYTES;
use crate::format::pickle::{self, Policy};
use crate::format::zip::{self, Directory, RangedZip, ZipAnchor, ZipEntry};
use crate::tree::{ByteRange, Check, Checksum, Dict, Inline, Node, Source, StateTree, TensorData};

/// Reads the archive at `range` of `object`, given blocks already read (at absolute offsets),
/// which should include its tail: the directory, then `data.pkl` with the small records beside
/// it. Tensors become byte ranges of their storage records.
///
/// # Errors
///
/// [`Error::Corrupt`] for a broken archive or records that do not fit together,
/// [`Error::Unsafe`] for a refused global, [`Error::Unsupported`] for a legacy, TorchScript or
/// compressed file; the reads' errors.
pub(crate) async fn read(
    object: &Object,
    range: Range<u64>,
    held: Vec<(u64, Bytes)>,
    options: ReadOptions,
) -> Result<StateTree> {
    let uri = object.location().uri();
    let mut zip = RangedZip::open(object, range, held)
        .await?
        .map_err(|e| legacy_or_zip_error(&uri, &e.first, e.problem))?;
    let archive = Archive::find(zip.directory(), &uri)?;
    let wanted = archive.small_records(zip.directory());
    let records = zip.records(&wanted, options.verify).await?;
    let storages = Remote {
        source: source(zip.object()),
        base: zip.base(),
        directory: zip.directory(),
        archive: &archive.prefix,
        alignment: archive.alignment(&records, &uri)?,
        big_endian: archive.big_endian(&records, &uri)?,
        verify: options.verify,
    };
    to_tree(
        &records[&archive.pickle],
        &archive.pickle,
        &storages,
        options,
        &uri,
    )
}

/// Reads a whole archive held in memory; `name` says where it came from in messages.
/// Tensors become slices of it.
///
/// # Errors
///
/// As [`read`].
pub(crate) fn read_bytes(data: &Bytes, name: &str, options: ReadOptions) -> Result<StateTree> {
    let directory = zip::read_directory(data).map_err(|e| legacy_or_zip_error(name, data, e))?;
    let archive = Archive::find(&directory, name)?;
    let mut records = HashMap::new();
    for entry in archive.small_records(&directory) {
        let bytes =
            zip::record(data, &entry, options.verify).map_err(|e| Error::corrupt(name, e))?;
        records.insert(entry.name.clone(), bytes);
    }
    let storages = InMemory {
        data,
        directory: &directory,
        archive: &archive.prefix,
        big_endian: archive.big_endian(&records, name)?,
        verify: options.verify,
        origin: Arc::from(name),
    };
    to_tree(
        &records[&archive.pickle],
        &archive.pickle,
        &storages,
        options,
        name,
    )
}

/// The pickle `data` (the record `record` of `uri`) as a tree over `storages`.
fn to_tree(
    data: &[u8],
    record: &str,
    storages: &dyn Storages,
    options: ReadOptions,
    uri: &str,
) -> Result<StateTree> {
    let heap = pickle::parse(data, &policy(options)).map_err(|e| pickle::error(uri, record, e))?;
    tree_of(&heap, record, storages, uri)
}

/// How a torch pickle's globals are treated: torch's rebuild rules and the generic ones are
/// known, anything else is refused in strict mode.
pub(crate) fn policy(options: ReadOptions) -> Policy {
    Policy {
        strict: options.strict,
        known: |g| codec::is_known(g) || pickle::convert::is_known(g),
    }
}

/// The unpickled object `heap` (read from `record` of `uri`) as a tree over `storages`; an
/// object that is not a dict is the tree's one entry, under the empty key.
pub(crate) fn tree_of(
    heap: &pickle::Heap,
    record: &str,
    storages: &dyn Storages,
    uri: &str,
) -> Result<StateTree> {
    let root = codec::to_node(heap, storages, uri)
        .map_err(|e| Error::corrupt(uri, TorchError(format!("`{record}`: {e}"))))?;
    Ok(match root {
        Node::Dict(dict) => StateTree::from_dict(dict),
        other => StateTree::from_dict(Dict::from([(String::new(), other)])),
    })
}

/// The records of one archive: the top folder and its `data.pkl`.
struct Archive {
    /// The name of `data.pkl`.
    pickle: String,
    /// The folder, with its `/` (torch names it after the file).
    prefix: String,
}

impl Archive {
    fn find(directory: &Directory, uri: &str) -> Result<Self> {
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
        if pickle.size > MAX_PICKLE_BYTES {
            return Err(Error::corrupt(
                uri,
                TooLargeFile {
                    what: "pickle",
                    size: pickle.size,
                    limit: MAX_PICKLE_BYTES,
                },
            ));
        }
        Ok(Self {
            prefix: pickle.name.trim_end_matches("data.pkl").to_owned(),
            pickle: pickle.name.clone(),
        })
    }

    /// `data.pkl` and the small records read with it.
    fn small_records(&self, directory: &Directory) -> Vec<ZipEntry> {
        [
            &self.pickle,
            &self.name("byteorder"),
            &self.name(".storage_alignment"),
        ]
        .into_iter()
        .filter_map(|name| directory.get(name).cloned())
        .collect()
    }

    fn name(&self, record: &str) -> String {
        format!("{}{record}", self.prefix)
    }

    fn big_endian(&self, records: &HashMap<String, Bytes>, uri: &str) -> Result<bool> {
        match records.get(&self.name("byteorder")).map(|b| &b[..]) {
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
        match records.get(&self.name(".storage_alignment")) {
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
}

/// The record of storage `key` in the archive under `prefix`, stored uncompressed, and big
/// enough for `bytes`.
fn storage<'a>(
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

/// Storages as ranges of a remote object, at offsets predicted from the directory and
/// confirmed by their local headers when read.
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
    fn origin(&self) -> Arc<str> {
        Arc::from(self.source.uri())
    }

    fn data(&self, key: &str, bytes: Range<u64>) -> Result<TensorData, String> {
        let entry = storage(self.directory, self.archive, key, &bytes)?;
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
        anchored.next_header = match entry.next_header {
            Some(next) => Some(next.checked_add(self.base).ok_or_else(beyond)?),
            None => None,
        };
        let span = payload..payload.checked_add(entry.size).ok_or_else(beyond)?;
        let check = summed(self.verify, entry).then(|| Check {
            span,
            checksum: Checksum::Crc32(entry.crc32),
            record: Arc::from(entry.name.as_str()),
        });
        let range = payload + bytes.start..payload + bytes.end;
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

/// Whether reading `entry` compares its bytes with its CRC-32: a CRC of 0 is what
/// `torch.save(..., compute_crc32=False)` records, nothing to check.
fn summed(verify: bool, entry: &ZipEntry) -> bool {
    verify && entry.crc32 != 0
}

/// Storages as slices of an archive held in memory, each checked as it is sliced.
struct InMemory<'a> {
    data: &'a Bytes,
    directory: &'a Directory,
    archive: &'a str,
    big_endian: bool,
    verify: bool,
    origin: Arc<str>,
}

impl Storages for InMemory<'_> {
    fn origin(&self) -> Arc<str> {
        Arc::clone(&self.origin)
    }

    fn data(&self, key: &str, bytes: Range<u64>) -> Result<TensorData, String> {
        let entry = storage(self.directory, self.archive, key, &bytes)?;
        let record = zip::record(self.data, entry, self.verify).map_err(|e| e.to_string())?;
        Ok(TensorData::Inline(Inline {
            bytes: record.slice(bytes.start as usize..bytes.end as usize),
            big_endian: self.big_endian,
            origin: Arc::clone(&self.origin),
            checked: summed(self.verify, entry),
        }))
    }
}
