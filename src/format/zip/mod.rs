//! Zip archives read by ranges: the central directory through [rc-zip]'s sans-io state
//! machine, fed from blocks the caller fetched, and local headers parsed on their own. Pure:
//! [`DirectoryReader`] says which byte range it needs next and never does I/O itself.
//!
//! [rc-zip]: https://docs.rs/rc-zip

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use rc_zip::fsm::{ArchiveFsm, FsmResult};

use crate::error::{Error, Result as CrateResult};
use crate::tree::Anchor;

mod ranges;
pub mod writer;

pub(crate) use ranges::RangedZip;

/// A zip64 end-of-central-directory record starts with this signature; its directory offset
/// is the 8 bytes at 48..56.
const ZIP64_RECORD_SIGNATURE: [u8; 4] = *b"PK\x06\x06";
const ZIP64_RECORD_PREFIX: usize = 56;

/// What one speculative read of a zip's tail asks for: the 65 KiB rc-zip searches for the end
/// record (which may be followed by a comment of up to 64 KiB), which also holds the central
/// directory of a checkpoint with hundreds of tensors.
pub const TAIL_READ: u64 = 65 << 10;

/// The most central-directory bytes a reader fetches before giving up (≈ 700,000 entries).
pub const MAX_DIRECTORY_BYTES: u64 = 64 << 20;

/// The most one request for more of the directory asks for.
const MAX_STEP: u64 = 8 << 20;

/// A local file header's fixed part, before the name and the extra field.
pub const LOCAL_HEADER_LEN: u64 = 30;

const LOCAL_HEADER_SIGNATURE: &[u8; 4] = b"PK\x03\x04";

/// One file of an archive, as the central directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// Its name (`archive/data/0`).
    pub name: String,
    /// Offset of its local header.
    pub header_offset: u64,
    /// Stored size.
    pub compressed_size: u64,
    /// Size once extracted.
    pub size: u64,
    /// CRC-32 of the extracted bytes.
    pub crc32: u32,
    /// The compression method's name, `None` when stored uncompressed.
    pub compression: Option<String>,
    /// Whether a data descriptor follows the payload (general purpose flag bit 3), as torch
    /// writes.
    pub descriptor: bool,
    /// Where the next record starts (the next local header), `None` for the last entry.
    pub next_header: Option<u64>,
}

impl ZipEntry {
    /// Where torch's writer puts the payload: right after the local header, whose extra field
    /// pads the payload to a multiple of `alignment` (64 by default). Readers confirm it
    /// against the local header when they read the payload.
    pub fn torch_payload_offset(&self, alignment: u64) -> Option<u64> {
        const ZIP64_LIMIT: u64 = 0xffff_ffff;
        let name_len = self.name.len() as u64;
        // Local header, name, and the 4-byte header of the "FB" padding field.
        let mut start = self
            .header_offset
            .checked_add(LOCAL_HEADER_LEN + name_len + 4)?;
        let big = self.size >= ZIP64_LIMIT;
        let far = self.header_offset >= ZIP64_LIMIT;
        if big || far {
            start = start.checked_add(4 + if big { 16 } else { 0 } + if far { 8 } else { 0 })?;
        }
        let alignment = alignment.max(1);
        start.checked_next_multiple_of(alignment)
    }
}

/// The entries of an archive, in the order of their local headers.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

impl Directory {
    /// The entries of an archive of `size` bytes, by offset, each checked to fit before the
    /// next record: a size that claims more room than there is cannot turn a read into a view
    /// that escapes its checksum.
    fn new(mut entries: Vec<ZipEntry>, size: u64) -> Result<Self, ZipError> {
        entries.sort_by_key(|e| e.header_offset);
        let starts: Vec<u64> = entries.iter().map(|e| e.header_offset).collect();
        for (i, entry) in entries.iter_mut().enumerate() {
            let next = starts.get(i + 1).copied();
            let room = next.unwrap_or(size).saturating_sub(entry.header_offset);
            let needs = (LOCAL_HEADER_LEN + entry.name.len() as u64)
                .checked_add(entry.compressed_size)
                .filter(|&n| n <= room);
            if needs.is_none() {
                return Err(ZipError::LyingSize {
                    name: entry.name.clone(),
                    claimed: entry.compressed_size,
                    room,
                });
            }
            if entry.compression.is_none() && entry.compressed_size != entry.size {
                return Err(ZipError::LyingSize {
                    name: entry.name.clone(),
                    claimed: entry.size,
                    room: entry.compressed_size,
                });
            }
            entry.next_header = next;
        }
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(Self { entries, by_name })
    }

    /// Every entry, by local header offset.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
}

/// What is wrong with an archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZipError {
    /// The end records or the central directory are invalid.
    #[error("not a valid zip archive: {0}")]
    Invalid(String),
    /// The directory points past the end of the data.
    #[error("the zip directory points past the end of the file at byte {offset} (truncated?)")]
    Truncated {
        /// The offset asked for.
        offset: u64,
    },
    /// The central directory is larger than the limit (64 MiB).
    #[error("the zip central directory is larger than {MAX_DIRECTORY_BYTES} bytes")]
    DirectoryTooLarge,
    /// An entry whose size does not fit the archive: more bytes than there is room for before
    /// the next record, or a stored entry whose two sizes differ.
    #[error("entry `{name}` claims {claimed} bytes where there are {room} (a lying size)")]
    LyingSize {
        /// The entry.
        name: String,
        /// The size it claims.
        claimed: u64,
        /// The room there is.
        room: u64,
    },
    /// An entry whose payload does not end where the next record begins.
    #[error(
        "entry `{name}`: its {size} bytes from byte {payload} do not end where the next record starts, at byte {next} (a lying size)"
    )]
    Extent {
        /// The entry.
        name: String,
        /// Where its payload starts.
        payload: u64,
        /// Its size.
        size: u64,
        /// Where the next record starts.
        next: u64,
    },
    /// An entry whose bytes do not match the CRC-32 the directory records.
    #[error("entry `{name}` is corrupt: expected CRC-32 {expected:08x}, computed {found:08x}")]
    Crc {
        /// The entry.
        name: String,
        /// The CRC-32 the directory records.
        expected: u32,
        /// The CRC-32 of the bytes read.
        found: u32,
    },
    /// A local header that does not match its directory entry.
    #[error("entry `{name}`: its local header at byte {offset} {problem}")]
    LocalHeader {
        /// The entry.
        name: String,
        /// The local header's offset.
        offset: u64,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Reads a central directory from blocks of the file, asking for each block it lacks.
pub struct DirectoryReader {
    fsm: Option<ArchiveFsm>,
    size: u64,
    held: Vec<(u64, Bytes)>,
    fetched: u64,
}

/// What a [`DirectoryReader`] needs next.
#[derive(Debug)]
pub enum Step {
    /// The bytes of this range.
    Read(Range<u64>),
    /// The directory is read.
    Done(Directory),
}

impl DirectoryReader {
    /// A reader of an archive of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            fsm: Some(ArchiveFsm::new(size)),
            size,
            held: Vec::new(),
            fetched: 0,
        }
    }

    /// The speculative first read: the last [`TAIL_READ`] bytes.
    pub fn tail(size: u64) -> Range<u64> {
        size.saturating_sub(TAIL_READ)..size
    }

    /// Hands over bytes starting at `start` (any block: the tail, a block asked for, or one
    /// already held for another reason).
    pub fn supply(&mut self, start: u64, bytes: Bytes) {
        self.fetched += bytes.len() as u64;
        self.held.push((start, bytes));
    }

    /// Runs the state machine as far as the held bytes allow.
    ///
    /// # Errors
    ///
    /// [`ZipError`] for an invalid or truncated archive, or a directory beyond the limit.
    pub fn advance(&mut self) -> Result<Step, ZipError> {
        loop {
            let Some(mut fsm) = self.fsm.take() else {
                return Err(ZipError::Invalid("the directory was already read".into()));
            };
            if let Some(offset) = fsm.wants_read() {
                if offset >= self.size {
                    return Err(ZipError::Truncated { offset });
                }
                let Some(held) = self.held_at(offset) else {
                    let range = self.next_read(offset)?;
                    self.fsm = Some(fsm);
                    return Ok(Step::Read(range));
                };
                self.check_zip64_record(offset)?;
                let space = fsm.space();
                if space.is_empty() {
                    return Err(ZipError::Invalid(
                        "a directory record does not fit the reader's buffer".into(),
                    ));
                }
                let n = space.len().min(held.len());
                space[..n].copy_from_slice(&held[..n]);
                fsm.fill(n);
            }
            match fsm.process() {
                Ok(FsmResult::Continue(fsm)) => self.fsm = Some(fsm),
                Ok(FsmResult::Done(archive)) => return directory(archive).map(Step::Done),
                Err(e) => return Err(ZipError::Invalid(e.to_string())),
            }
        }
    }

    /// Refuses a zip64 end record at `offset` whose directory offset is 2^63 or more, before
    /// rc-zip sees it: rc-zip 5.4 subtracts it as an `i64`, which overflows (a panic where
    /// overflow checks are on, a wrapped offset where they are not).
    fn check_zip64_record(&self, offset: u64) -> Result<(), ZipError> {
        let mut record = Vec::with_capacity(ZIP64_RECORD_PREFIX);
        while record.len() < ZIP64_RECORD_PREFIX {
            let Some(held) = self.held_at(offset + record.len() as u64) else {
                break;
            };
            let n = held.len().min(ZIP64_RECORD_PREFIX - record.len());
            record.extend_from_slice(&held[..n]);
        }
        if record.len() < ZIP64_RECORD_PREFIX || record[..4] != ZIP64_RECORD_SIGNATURE {
            return Ok(());
        }
        let at = u64::from_le_bytes(record[48..56].try_into().expect("8 bytes"));
        if at > i64::MAX as u64 {
            return Err(ZipError::Invalid(format!(
                "the zip64 end record puts the directory at byte {at}, past the end of the \
                 {}-byte archive",
                self.size
            )));
        }
        Ok(())
    }

    /// The held bytes from `offset` to the end of the block holding it.
    fn held_at(&self, offset: u64) -> Option<Bytes> {
        self.held.iter().find_map(|(start, bytes)| {
            let end = start + bytes.len() as u64;
            (*start <= offset && offset < end).then(|| bytes.slice((offset - start) as usize..))
        })
    }

    /// The next block to fetch for `offset`: up to the next held block (the directory runs
    /// into the tail), within the budget.
    fn next_read(&self, offset: u64) -> Result<Range<u64>, ZipError> {
        let budget = MAX_DIRECTORY_BYTES.saturating_sub(self.fetched);
        if budget == 0 {
            return Err(ZipError::DirectoryTooLarge);
        }
        let next_held = self
            .held
            .iter()
            .map(|(start, _)| *start)
            .filter(|&s| s > offset)
            .min()
            .unwrap_or(self.size);
        let end = next_held.min(offset + MAX_STEP.min(budget));
        Ok(offset..end)
    }
}

fn directory(archive: rc_zip::Archive) -> Result<Directory, ZipError> {
    let size = archive.size();
    let entries = archive
        .entries()
        .map(|e| ZipEntry {
            name: e.name.clone(),
            header_offset: e.header_offset,
            compressed_size: e.compressed_size,
            size: e.uncompressed_size,
            crc32: e.crc32,
            compression: (e.method != rc_zip::parse::Method::Store)
                .then(|| format!("{:?}", e.method)),
            descriptor: e.flags & 0x08 != 0,
            next_header: None,
        })
        .collect();
    Directory::new(entries, size)
}

/// Reads the directory of an archive held whole in memory.
///
/// # Errors
///
/// As [`DirectoryReader::advance`].
pub fn read_directory(data: &[u8]) -> Result<Directory, ZipError> {
    let size = data.len() as u64;
    let mut reader = DirectoryReader::new(size);
    let mut want = DirectoryReader::tail(size);
    loop {
        let block = &data[want.start as usize..want.end as usize];
        reader.supply(want.start, Bytes::copy_from_slice(block));
        match reader.advance()? {
            Step::Read(range) => want = range,
            Step::Done(directory) => return Ok(directory),
        }
    }
}

/// The offset of `entry`'s payload, from the bytes of its local header (`header` starts at
/// the header and holds at least its fixed part and name).
///
/// # Errors
///
/// [`ZipError::LocalHeader`] when the signature or the name do not match the directory.
pub fn payload_offset(entry: &ZipEntry, header: &[u8]) -> Result<u64, ZipError> {
    let bad = |problem| ZipError::LocalHeader {
        name: entry.name.clone(),
        offset: entry.header_offset,
        problem,
    };
    let fixed = header
        .get(..LOCAL_HEADER_LEN as usize)
        .ok_or(bad("is cut short"))?;
    if &fixed[..4] != LOCAL_HEADER_SIGNATURE {
        return Err(bad("has no local header signature"));
    }
    let name_len = u16::from_le_bytes([fixed[26], fixed[27]]) as u64;
    let extra_len = u16::from_le_bytes([fixed[28], fixed[29]]) as u64;
    let name = header
        .get(LOCAL_HEADER_LEN as usize..(LOCAL_HEADER_LEN + name_len) as usize)
        .ok_or(bad("is cut short"))?;
    if name != entry.name.as_bytes() {
        return Err(bad("names another file"));
    }
    entry
        .header_offset
        .checked_add(LOCAL_HEADER_LEN + name_len + extra_len)
        .ok_or(bad("lies beyond any offset"))
}

/// Checks that `entry`'s payload, starting at `payload`, ends where the next record begins
/// (after its data descriptor, when it has one): its size is the truth.
///
/// # Errors
///
/// [`ZipError::Extent`] when it does not.
pub fn check_extent(entry: &ZipEntry, payload: u64) -> Result<(), ZipError> {
    let Some(next) = entry.next_header else {
        return Ok(());
    };
    let end = payload.saturating_add(entry.compressed_size);
    // A data descriptor: 12 or 20 bytes (zip64), with or without its 4-byte signature.
    let fits = if entry.descriptor {
        [12, 16, 20, 24]
            .iter()
            .any(|d| end.checked_add(*d) == Some(next))
    } else {
        end == next
    };
    if fits {
        return Ok(());
    }
    Err(ZipError::Extent {
        name: entry.name.clone(),
        payload,
        size: entry.compressed_size,
        next,
    })
}

/// Checks `data` (the whole payload of `entry`) against the entry's CRC-32. A CRC of 0 is what
/// writers record when they computed none (`torch.save(..., compute_crc32=False)`): nothing to
/// check.
///
/// # Errors
///
/// [`ZipError::Crc`] when they differ.
pub fn check_crc(entry: &ZipEntry, data: &[u8]) -> Result<(), ZipError> {
    if entry.crc32 == 0 {
        return Ok(());
    }
    let found = crc32fast::hash(data);
    if found != entry.crc32 {
        return Err(ZipError::Crc {
            name: entry.name.clone(),
            expected: entry.crc32,
            found,
        });
    }
    Ok(())
}

/// The payload of `entry` in an archive held whole in memory, checked against its CRC-32 with
/// `verify`.
///
/// # Errors
///
/// [`ZipError`] for a local header that does not match, a payload past the end, or a CRC that
/// does not match.
pub fn record(data: &Bytes, entry: &ZipEntry, verify: bool) -> Result<Bytes, ZipError> {
    let at = usize::try_from(entry.header_offset)
        .ok()
        .and_then(|at| data.get(at..))
        .unwrap_or_default();
    let start = payload_offset(entry, at)?;
    check_extent(entry, start)?;
    let end = start.saturating_add(entry.size);
    let payload = usize::try_from(start)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(s, e)| data.get(s..e))
        .ok_or(ZipError::Truncated { offset: end })?;
    if verify {
        check_crc(entry, payload)?;
    }
    Ok(data.slice_ref(payload))
}

/// A zip entry whose payload offset was predicted from the central directory (torch's writer
/// aligns payloads, so no request per local header is needed). The materializer reads the
/// local header with the data and, should the prediction be wrong, reads again at the offset
/// the header gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipAnchor {
    /// The entry, its header offset counted from the start of the object.
    pub entry: ZipEntry,
    /// Where its payload was predicted to start in the object.
    pub payload: u64,
}

impl Anchor for ZipAnchor {
    fn header_start(&self) -> u64 {
        self.entry.header_offset
    }

    fn predicted(&self) -> u64 {
        self.payload
    }

    fn payload_start(&self, uri: &str, header: &[u8]) -> CrateResult<u64> {
        let payload =
            payload_offset(&self.entry, header).map_err(|problem| Error::corrupt(uri, problem))?;
        check_extent(&self.entry, payload).map_err(|problem| Error::corrupt(uri, problem))?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored archive built record by record: `a.txt` = b"hello", `dir/b.bin` = 300 bytes
    /// of 7.
    fn two_entries() -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in [("a.txt", b"hello".to_vec()), ("dir/b.bin", vec![7u8; 300])] {
            let offset = out.len() as u32;
            let crc = crc32fast::hash(&data);
            let mut local = Vec::new();
            local.extend(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x21\x00");
            local.extend(crc.to_le_bytes());
            local.extend((data.len() as u32).to_le_bytes());
            local.extend((data.len() as u32).to_le_bytes());
            local.extend((name.len() as u16).to_le_bytes());
            local.extend(0u16.to_le_bytes());
            local.extend(name.as_bytes());
            out.extend(&local);
            out.extend(&data);
            central.extend(b"PK\x01\x02\x14\x03\x14\x00\x00\x00\x00\x00\x00\x00\x21\x00");
            central.extend(crc.to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 8]);
            central.extend(0o100644u32.wrapping_shl(16).to_le_bytes());
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend(&central);
        out.extend(b"PK\x05\x06\x00\x00\x00\x00\x02\x00\x02\x00");
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    /// `two_entries` as a zip64 archive: a zip64 end record (its directory offset
    /// `directory_at`) and its locator before the end record.
    fn zip64(directory_at: u64) -> Vec<u8> {
        let mut out = two_entries();
        let eocd = out.split_off(out.len() - 22);
        let central_len = u32::from_le_bytes(eocd[12..16].try_into().unwrap()) as u64;
        let record_at = out.len() as u64;
        out.extend(b"PK\x06\x06");
        out.extend(44u64.to_le_bytes());
        out.extend([45, 3, 45, 0]);
        out.extend([0u8; 8]);
        out.extend(2u64.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        out.extend(central_len.to_le_bytes());
        out.extend(directory_at.to_le_bytes());
        out.extend(b"PK\x06\x07");
        out.extend(0u32.to_le_bytes());
        out.extend(record_at.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(&eocd);
        out
    }

    #[test]
    fn a_zip64_directory_offset_past_any_file_is_refused_not_overflowed() {
        let good = zip64(u64::from(u32::from_le_bytes(
            two_entries()[two_entries().len() - 6..][..4]
                .try_into()
                .unwrap(),
        )));
        let names: Vec<_> = read_directory(&good)
            .unwrap()
            .entries()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(
            names,
            ["a.txt", "dir/b.bin"],
            "a well-formed zip64 tail reads"
        );
        let err = read_directory(&zip64(1 << 63)).unwrap_err();
        assert!(err.to_string().contains("9223372036854775808"), "{err}");
    }

    #[test]
    fn the_directory_lists_entries_with_sizes_and_crcs() {
        let data = two_entries();
        let dir = read_directory(&data).unwrap();
        let names: Vec<_> = dir.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "dir/b.bin"]);
        let b = dir.get("dir/b.bin").unwrap();
        assert_eq!((b.size, b.compressed_size), (300, 300));
        assert_eq!(b.crc32, crc32fast::hash(&[7u8; 300]));
        assert_eq!(b.compression, None);
        let at = payload_offset(b, &data[b.header_offset as usize..]).unwrap();
        assert_eq!(&data[at as usize..at as usize + 300], &[7u8; 300]);
    }

    #[test]
    fn a_directory_beyond_the_tail_read_takes_one_more_read() {
        // 1,500 entries: about 100 KiB of central directory.
        let mut w = Vec::new();
        let mut central = Vec::new();
        for i in 0..1500u32 {
            let name = format!("archive/data/{i:040}");
            let offset = w.len() as u32;
            w.extend(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x21\x00");
            w.extend([0u8; 12]);
            w.extend((name.len() as u16).to_le_bytes());
            w.extend(0u16.to_le_bytes());
            w.extend(name.as_bytes());
            central.extend(b"PK\x01\x02\x14\x03\x14\x00\x00\x00\x00\x00\x00\x00\x21\x00");
            central.extend([0u8; 12]);
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 12]);
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd = w.len() as u32;
        w.extend(&central);
        w.extend(b"PK\x05\x06\x00\x00\x00\x00\xdc\x05\xdc\x05");
        w.extend((central.len() as u32).to_le_bytes());
        w.extend(cd.to_le_bytes());
        w.extend(0u16.to_le_bytes());

        let size = w.len() as u64;
        let mut reader = DirectoryReader::new(size);
        let tail = DirectoryReader::tail(size);
        reader.supply(
            tail.start,
            Bytes::copy_from_slice(&w[tail.start as usize..]),
        );
        let Step::Read(more) = reader.advance().unwrap() else {
            panic!("the tail alone cannot hold it")
        };
        assert_eq!(more, cd as u64..tail.start, "exactly the missing part");
        reader.supply(
            more.start,
            Bytes::copy_from_slice(&w[more.start as usize..more.end as usize]),
        );
        let Step::Done(dir) = reader.advance().unwrap() else {
            panic!("two reads are enough")
        };
        assert_eq!(dir.entries().len(), 1500);
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let data = two_entries();
        for cut in 0..data.len() {
            assert!(read_directory(&data[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            read_directory(&[0u8; 1000]),
            Err(ZipError::Invalid(_))
        ));
        // The end record counts three entries; the directory holds two.
        let mut lying = data.clone();
        let at = lying.len() - 12;
        lying[at..at + 4].copy_from_slice(b"\x03\x00\x03\x00");
        let err = read_directory(&lying).unwrap_err();
        assert!(err.to_string().contains("not a valid zip"), "{err}");
    }

    #[test]
    fn a_local_header_must_match_its_entry() {
        let data = two_entries();
        let dir = read_directory(&data).unwrap();
        let a = dir.get("a.txt").unwrap();
        let b = dir.get("dir/b.bin").unwrap();
        let err = payload_offset(a, &data[b.header_offset as usize..]).unwrap_err();
        assert!(err.to_string().contains("names another file"), "{err}");
        let err = payload_offset(a, &data[1..]).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        let err = payload_offset(a, &data[..20]).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    #[test]
    fn torch_payloads_are_predicted_at_the_alignment() {
        let e = |name: &str, header_offset, size| ZipEntry {
            name: name.into(),
            header_offset,
            compressed_size: size,
            size,
            crc32: 0,
            compression: None,
            descriptor: true,
            next_header: None,
        };
        // Offsets torch 2.15 wrote for `t/data.pkl` at 0 and `t/data/0` at 598.
        assert_eq!(e("t/data.pkl", 0, 224).torch_payload_offset(64), Some(64));
        assert_eq!(e("t/data/0", 598, 24).torch_payload_offset(64), Some(640));
        assert_eq!(e("t/data/0", 598, 24).torch_payload_offset(1), Some(640));
        assert_eq!(e("x", u64::MAX - 8, 1).torch_payload_offset(64), None);
        // Found by the fuzzer: the zip64 fields overflowed an offset near the end.
        assert_eq!(e("x", u64::MAX - 40, 1).torch_payload_offset(64), None);
    }

    #[test]
    fn sizes_that_lie_about_the_layout_are_errors() {
        let entry = |name: &str, at: u64, size: u64| ZipEntry {
            name: name.into(),
            header_offset: at,
            compressed_size: size,
            size,
            crc32: 0,
            compression: None,
            descriptor: true,
            next_header: None,
        };
        // Two records: `a` at 0 (30 + 1 name bytes + 16 payload + 16 descriptor), `b` at 63.
        let fits = Directory::new(vec![entry("a", 0, 16), entry("b", 63, 4)], 200).unwrap();
        assert_eq!(fits.get("a").unwrap().next_header, Some(63));
        check_extent(fits.get("a").unwrap(), 31).unwrap();
        assert!(matches!(
            check_extent(fits.get("a").unwrap(), 40),
            Err(ZipError::Extent { next: 63, .. })
        ));
        for size in [1u64 << 63, u64::MAX - 15, 40] {
            let err =
                Directory::new(vec![entry("a", 0, size), entry("b", 63, 4)], 200).unwrap_err();
            assert!(
                matches!(err, ZipError::LyingSize { ref name, .. } if name == "a"),
                "{err}"
            );
        }
        let mut stored = entry("s", 0, 8);
        stored.size = 1 << 40;
        assert!(
            Directory::new(vec![stored], 200).is_err(),
            "stored sizes differ"
        );
    }
}
