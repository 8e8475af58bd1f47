//! Writing a zip archive as `torch.save` writes one: stored (uncompressed) records, each
//! record's data 64-byte aligned by padding in its local header's extra field, sizes and
//! CRC-32 in a data descriptor after the data (so a record streams without knowing its CRC
//! first), and Zip64 end records. Pure: the caller sends the bytes each call returns, in order.
//!
//! ```text
//! [local header + padding][data][descriptor] ... [central directory][zip64 end][locator][end]
//! ```

/// The alignment of every record's data, as torch writes it (`.storage_alignment`).
pub const ALIGNMENT: u64 = 64;

/// Sizes and offsets at or past this need Zip64 fields.
const ZIP64_AT: u64 = 0xffff_ffff;

/// General-purpose flags: sizes in a data descriptor (bit 3), UTF-8 names (bit 11).
const FLAGS: u16 = 0x0808;

/// A record written, for the central directory.
#[derive(Debug, Clone)]
struct Written {
    name: String,
    offset: u64,
    size: u64,
    crc32: u32,
}

/// An archive being written: where the next byte goes and what has been written.
#[derive(Debug, Default)]
pub struct ZipWriter {
    at: u64,
    records: Vec<Written>,
    open: Option<(String, u64)>,
}

impl ZipWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.at
    }

    /// The local header of record `name`, padded so that its data starts aligned. Its data
    /// follows, then [`end_record`](Self::end_record).
    ///
    /// # Panics
    ///
    /// When a record is still open (a caller bug).
    pub fn start_record(&mut self, name: &str) -> Vec<u8> {
        assert!(self.open.is_none(), "record started inside another");
        let mut out = Vec::with_capacity(30 + name.len() + 4 + ALIGNMENT as usize);
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&0u16.to_le_bytes()); // version needed (as torch writes it)
        out.extend_from_slice(&FLAGS.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&[0; 4]); // time, date
        out.extend_from_slice(&[0; 12]); // crc, sizes: in the descriptor
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        let unpadded = self.at + 30 + name.len() as u64 + 4;
        let pad = (ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT;
        out.extend_from_slice(&(4 + pad as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        // An extra field of torch's own tag ("FB"), holding the padding.
        out.extend_from_slice(b"FB");
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.resize(out.len() + pad as usize, b'Z');
        self.open = Some((name.to_owned(), self.at));
        self.at += out.len() as u64;
        out
    }

    /// The data descriptor that closes the open record, whose data was `size` bytes with CRC-32
    /// `crc32`.
    ///
    /// # Panics
    ///
    /// When no record is open (a caller bug).
    pub fn end_record(&mut self, size: u64, crc32: u32) -> Vec<u8> {
        let (name, offset) = self.open.take().expect("a record is open");
        self.at += size;
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(b"PK\x07\x08");
        out.extend_from_slice(&crc32.to_le_bytes());
        if size >= ZIP64_AT {
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
        } else {
            out.extend_from_slice(&(size as u32).to_le_bytes());
            out.extend_from_slice(&(size as u32).to_le_bytes());
        }
        self.at += out.len() as u64;
        self.records.push(Written {
            name,
            offset,
            size,
            crc32,
        });
        out
    }

    /// A whole small record: its header, data and descriptor.
    pub fn record(&mut self, name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = self.start_record(name);
        out.extend_from_slice(data);
        out.extend(self.end_record(data.len() as u64, crc32fast::hash(data)));
        out
    }

    /// Forty digits that name the records written so far, as torch's `.data/serialization_id`
    /// does: a combined hash of their names, then their combined CRC-32s. The same records
    /// give the same id, so saving the same tensors twice writes the same bytes.
    pub fn serialization_id(&self) -> String {
        let (mut names, mut crcs) = (0u64, 0u64);
        for r in &self.records {
            names = combine(names, u64::from(crc32fast::hash(r.name.as_bytes())));
            crcs = combine(crcs, u64::from(r.crc32));
        }
        format!("{names:020}{crcs:020}")
    }

    /// The central directory and end records: the archive's last bytes.
    ///
    /// # Panics
    ///
    /// When a record is still open (a caller bug).
    pub fn finish(self) -> Vec<u8> {
        assert!(self.open.is_none(), "archive finished inside a record");
        let start = self.at;
        let mut out = Vec::new();
        for r in &self.records {
            let mut extra = Vec::new();
            if r.size >= ZIP64_AT {
                extra.extend_from_slice(&r.size.to_le_bytes());
                extra.extend_from_slice(&r.size.to_le_bytes());
            }
            if r.offset >= ZIP64_AT {
                extra.extend_from_slice(&r.offset.to_le_bytes());
            }
            let narrow = |v: u64| if v >= ZIP64_AT { u32::MAX } else { v as u32 };
            out.extend_from_slice(b"PK\x01\x02");
            out.extend_from_slice(&45u16.to_le_bytes()); // made by: 4.5 (Zip64)
            out.extend_from_slice(&45u16.to_le_bytes()); // needed
            out.extend_from_slice(&FLAGS.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes()); // stored
            out.extend_from_slice(&[0; 4]); // time, date
            out.extend_from_slice(&r.crc32.to_le_bytes());
            out.extend_from_slice(&narrow(r.size).to_le_bytes());
            out.extend_from_slice(&narrow(r.size).to_le_bytes());
            out.extend_from_slice(&(r.name.len() as u16).to_le_bytes());
            let extra_len = if extra.is_empty() { 0 } else { 4 + extra.len() };
            out.extend_from_slice(&(extra_len as u16).to_le_bytes());
            out.extend_from_slice(&[0; 8]); // comment length, disk, internal and external attributes
            out.extend_from_slice(&[0; 2]);
            out.extend_from_slice(&narrow(r.offset).to_le_bytes());
            out.extend_from_slice(r.name.as_bytes());
            if !extra.is_empty() {
                out.extend_from_slice(&1u16.to_le_bytes());
                out.extend_from_slice(&(extra.len() as u16).to_le_bytes());
                out.extend_from_slice(&extra);
            }
        }
        let size = out.len() as u64;
        let count = self.records.len() as u64;
        let zip64_end = start + size;
        // Zip64 end of central directory record.
        out.extend_from_slice(b"PK\x06\x06");
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&45u16.to_le_bytes());
        out.extend_from_slice(&45u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]); // this disk, the directory's disk
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&start.to_le_bytes());
        // Its locator.
        out.extend_from_slice(b"PK\x06\x07");
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&zip64_end.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        // End of central directory, its fields saturated where Zip64 holds them.
        let count16 = u16::try_from(count).unwrap_or(u16::MAX);
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&count16.to_le_bytes());
        out.extend_from_slice(&count16.to_le_bytes());
        out.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(start).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }
}

/// Folds `value` into `seed` (boost's `hash_combine`, widened to 64 bits, as torch folds its
/// record hashes).
fn combine(seed: u64, value: u64) -> u64 {
    seed ^ value
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(seed << 6)
        .wrapping_add(seed >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_aligned_and_read_back_with_their_crcs() {
        let mut z = ZipWriter::new();
        let mut bytes = z.record("archive/data.pkl", b"\x80\x02.");
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        bytes.extend(z.start_record("archive/data/0"));
        assert_eq!(bytes.len() as u64 % ALIGNMENT, 0, "data starts aligned");
        bytes.extend_from_slice(&payload);
        bytes.extend(z.end_record(payload.len() as u64, crc32fast::hash(&payload)));
        assert_eq!(z.position(), bytes.len() as u64);
        bytes.extend(z.finish());

        let dir = crate::format::zip::read_directory(&bytes).unwrap();
        let entry = dir.get("archive/data/0").unwrap();
        assert_eq!((entry.size, entry.crc32), (1000, crc32fast::hash(&payload)));
        let at = entry.header_offset as usize;
        let start = crate::format::zip::payload_offset(entry, &bytes[at..at + 200]).unwrap();
        assert_eq!(start % ALIGNMENT, 0);
        let data = &bytes[start as usize..start as usize + 1000];
        crate::format::zip::check_crc(entry, data).unwrap();
        assert_eq!(data, &payload[..]);
    }

    #[test]
    fn the_serialization_id_follows_the_records_names_and_bytes_only() {
        let id = |records: &[(&str, &[u8])]| {
            let mut z = ZipWriter::new();
            for (name, data) in records {
                z.record(name, data);
            }
            z.serialization_id()
        };
        let base = id(&[("a/data.pkl", b"x"), ("a/data/0", b"1234")]);
        assert_eq!(base.len(), 40);
        assert!(base.bytes().all(|b| b.is_ascii_digit()), "{base}");
        assert_eq!(base, id(&[("a/data.pkl", b"x"), ("a/data/0", b"1234")]));
        assert_ne!(base, id(&[("a/data.pkl", b"x"), ("a/data/0", b"1235")]));
        assert_ne!(base, id(&[("a/data.pkl", b"x"), ("a/data/1", b"1234")]));
        assert_ne!(base, id(&[("a/data/0", b"1234"), ("a/data.pkl", b"x")]));
    }

    #[test]
    fn sizes_and_offsets_past_4_gib_go_into_zip64_fields() {
        let mut z = ZipWriter::new();
        z.start_record("big");
        let end = z.end_record(5 << 30, 7);
        assert_eq!(end.len(), 24, "a Zip64 descriptor has 8-byte sizes");
        let tail_at = z.position();
        z.record("after", b"x");
        let tail = z.finish();
        // The central directory entry of `after` holds its offset in a Zip64 extra field.
        let cd = &tail[..];
        let second = cd.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        assert_eq!(&cd[second + 42..second + 46], &u32::MAX.to_le_bytes());
        let extra = &cd[second + 46 + 5..];
        assert_eq!(&extra[..2], &1u16.to_le_bytes());
        assert_eq!(
            u64::from_le_bytes(extra[4..12].try_into().unwrap()),
            tail_at
        );
    }
}
