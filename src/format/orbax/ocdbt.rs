//! OCDBT, tensorstore's key-value B+tree (`kvstore/ocdbt/index.rst`; the manifest's
//! configuration also carries a manifest kind after the UUID, as tensorstore 0.1.86 writes
//! it): the manifest, which
//! names the latest version's root node, and B+tree nodes, each with a magic number, a length,
//! an optionally Zstandard-compressed body and a CRC-32C footer. Keys are prefix-compressed;
//! values are inline or byte ranges of data files (`d/<id>`), named by tables whose paths
//! are relative to the database root and to the path the node itself was reached by. Pure and
//! bounded: every count is checked against the bytes left before anything is sized by it.

use super::OrbaxError;

const MANIFEST_MAGIC: u32 = 0x0cdb_3a2a;
const BTREE_MAGIC: u32 = 0x0cdb_20de;

/// The most bytes a node or manifest body may decompress to (tensorstore's default
/// `max_decoded_node_bytes` is 8 MiB).
pub const MAX_DECODED: u64 = 64 << 20;

/// Where an encoded node is: a data file (a path from the database root), and a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    /// The data file, from the database root (`d/9a77…`).
    pub file: String,
    /// Everything a child's data file table names is relative to this (`ocdbt.process_0/`).
    pub transitive: String,
    /// Where the node starts in the file.
    pub offset: u64,
    /// Its encoded length.
    pub length: u64,
    /// Its height (0: a leaf).
    pub height: u8,
    /// The prefix of every key below it.
    pub prefix: Vec<u8>,
}

/// A value of a leaf entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Stored in the node.
    Inline(Vec<u8>),
    /// A byte range of a data file (a path from the database root).
    Indirect {
        /// The data file.
        file: String,
        /// Where the value starts.
        offset: u64,
        /// Its length.
        length: u64,
    },
}

/// A decoded B+tree node: its children, or its keys and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Children, in key order.
    Interior(Vec<NodeRef>),
    /// Full keys and their values, in key order.
    Leaf(Vec<(Vec<u8>, Value)>),
}

/// The latest version's root, from a manifest; `None` for an empty database.
///
/// # Errors
///
/// [`OrbaxError`] naming what is wrong.
pub fn manifest_root(data: &[u8]) -> Result<Option<NodeRef>, OrbaxError> {
    let body = unwrap(data, MANIFEST_MAGIC, "manifest")?;
    let mut r = Reader::new(&body, "the manifest");
    r.take(16)?; // the database's UUID
    match r.varint()? {
        0 => {}
        1 => {
            return Err(r.bad(
                "a numbered manifest (a coordinator's database), which ckptio does not read".into(),
            ));
        }
        k => return Err(r.bad(format!("manifest kind {k}"))),
    }
    let _max_inline = r.varint()?;
    let _max_node = r.varint()?;
    let _arity = r.byte()?;
    match r.varint()? {
        0 => {}
        1 => {
            r.take(4)?; // the zstd level
        }
        m => return Err(r.bad(format!("compression method {m}"))),
    }
    let files = r.file_table("")?;
    let versions = r.count(1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 8)?;
    let mut rows: Vec<[u64; 4]> = vec![[0; 4]; versions];
    for row in &mut rows {
        row[0] = r.varint()?; // generation
    }
    for row in &mut rows {
        row[1] = u64::from(r.byte()?); // root height
    }
    for i in 2..4 {
        for row in &mut rows {
            row[i] = r.varint()?; // data file id, offset
        }
    }
    let lengths: Vec<u64> = (0..versions)
        .map(|_| r.varint())
        .collect::<Result<_, _>>()?;
    let Some((last, &length)) = rows.last().zip(lengths.last()) else {
        return Ok(None);
    };
    // Generation numbers rise: the last inline version is the latest.
    if rows.windows(2).any(|w| w[0][0] >= w[1][0]) {
        return Err(r.bad("generation numbers that do not rise".into()));
    }
    let (file, transitive) = files.resolve(last[2], "the manifest")?;
    // A version with no root node is an empty database.
    Ok((length > 0).then(|| NodeRef {
        file,
        transitive,
        offset: last[3],
        length,
        height: last[1] as u8,
        prefix: Vec::new(),
    }))
}

/// The B+tree node `at` refers to, from its encoded bytes.
///
/// # Errors
///
/// [`OrbaxError`] naming what is wrong.
pub fn node(data: &[u8], at: &NodeRef) -> Result<Node, OrbaxError> {
    let body = unwrap(data, BTREE_MAGIC, "B+tree node")?;
    let mut r = Reader::new(&body, "a B+tree node");
    let height = r.byte()?;
    if height != at.height {
        return Err(r.bad(format!(
            "height {height} where its parent says {}",
            at.height
        )));
    }
    let files = r.file_table(&at.transitive)?;
    let n = r.count(2)?;
    let prefix_lengths: Vec<u64> = (0..n.saturating_sub(1))
        .map(|_| r.varint())
        .collect::<Result<_, _>>()?;
    let suffix_lengths: Vec<u64> = (0..n).map(|_| r.varint()).collect::<Result<_, _>>()?;
    if height == 0 {
        let keys = r.keys(&prefix_lengths, &suffix_lengths, &at.prefix)?;
        let lengths: Vec<u64> = (0..n).map(|_| r.varint()).collect::<Result<_, _>>()?;
        let kinds: Vec<u64> = (0..n).map(|_| r.varint()).collect::<Result<_, _>>()?;
        let indirect = kinds.iter().filter(|&&k| k == 1).count();
        if let Some(k) = kinds.iter().find(|&&k| k > 1) {
            return Err(r.bad(format!("value kind {k}")));
        }
        let ids: Vec<u64> = (0..indirect)
            .map(|_| r.varint())
            .collect::<Result<_, _>>()?;
        let offsets: Vec<u64> = (0..indirect)
            .map(|_| r.varint())
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(n);
        let mut k = 0;
        for ((key, length), kind) in keys.into_iter().zip(lengths).zip(kinds) {
            let value = if kind == 1 {
                let (file, _) = files.resolve(ids[k], "a leaf")?;
                k += 1;
                Value::Indirect {
                    file,
                    offset: offsets[k - 1],
                    length,
                }
            } else {
                Value::Inline(r.take(length)?.to_vec())
            };
            out.push((key, value));
        }
        return Ok(Node::Leaf(out));
    }
    let common: Vec<u64> = (0..n).map(|_| r.varint()).collect::<Result<_, _>>()?;
    let keys = r.keys(&prefix_lengths, &suffix_lengths, &at.prefix)?;
    let mut columns = [const { Vec::new() }; 3];
    for column in &mut columns {
        *column = (0..n).map(|_| r.varint()).collect::<Result<_, _>>()?;
    }
    let [ids, offsets, lengths] = columns;
    let mut children = Vec::with_capacity(n);
    for (i, key) in keys.into_iter().enumerate() {
        let relative = key.len() - at.prefix.len();
        let keep = usize::try_from(common[i])
            .ok()
            .filter(|&c| c <= relative)
            .ok_or_else(|| r.bad("a subtree prefix longer than its key".into()))?;
        let (file, transitive) = files.resolve(ids[i], "an interior node")?;
        children.push(NodeRef {
            file,
            transitive,
            offset: offsets[i],
            length: lengths[i],
            height: height - 1,
            prefix: key[..at.prefix.len() + keep].to_vec(),
        });
    }
    if height == 0 {
        unreachable!("leaves returned above");
    }
    Ok(Node::Interior(children))
}

/// The body of an encoded manifest or node: header checked, CRC-32C checked, decompressed.
fn unwrap(data: &[u8], magic: u32, what: &'static str) -> Result<Vec<u8>, OrbaxError> {
    let bad = |why: String| OrbaxError::Ocdbt(format!("{what}: {why}"));
    if data.len() < 4 + 8 + 2 + 4 {
        return Err(bad(format!("{} bytes is too short", data.len())));
    }
    let found = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
    if found != magic {
        return Err(bad(format!("magic {found:#010x}, not {magic:#010x}")));
    }
    let length = u64::from_le_bytes(data[4..12].try_into().expect("8 bytes"));
    if length != data.len() as u64 {
        return Err(bad(format!(
            "it says it has {length} bytes, {} were read",
            data.len()
        )));
    }
    let (signed, footer) = data.split_at(data.len() - 4);
    let stored = u32::from_le_bytes(footer.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(signed);
    if stored != computed {
        return Err(bad(format!(
            "CRC-32C {computed:08x}, but its footer says {stored:08x}"
        )));
    }
    let mut r = Reader::new(&signed[12..], what);
    if r.varint()? != 0 {
        return Err(bad("a format version other than 0".into()));
    }
    let compression = r.varint()?;
    let rest = &signed[12 + r.at..];
    match compression {
        0 => Ok(rest.to_vec()),
        1 => crate::format::zstd::decompress(rest, MAX_DECODED)
            .map(|b| b.to_vec())
            .map_err(bad),
        c => Err(bad(format!("compression format {c}"))),
    }
}

/// A data file table: each file's path from the database root, and the transitive path its
/// nodes' own tables are relative to.
struct Files(Vec<(String, String)>);

impl Files {
    fn resolve(&self, id: u64, what: &str) -> Result<(String, String), OrbaxError> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.0.get(i))
            .cloned()
            .ok_or_else(|| {
                OrbaxError::Ocdbt(format!(
                    "{what} names data file {id} of a table of {}",
                    self.0.len()
                ))
            })
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, at: 0, what }
    }

    fn bad(&self, why: String) -> OrbaxError {
        OrbaxError::Ocdbt(format!("{} at byte {}: {why}", self.what, self.at))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], OrbaxError> {
        let left = (self.data.len() - self.at) as u64;
        if n > left {
            return Err(self.bad(format!("{n} bytes claimed, {left} left")));
        }
        let out = &self.data[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, OrbaxError> {
        Ok(self.take(1)?[0])
    }

    /// A LEB128 varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64, OrbaxError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(self.bad("a varint past 64 bits".into()));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.bad("a varint longer than 10 bytes".into()))
    }

    /// A count of items of at least `each` bytes, refused when the bytes left cannot hold it.
    fn count(&mut self, each: u64) -> Result<usize, OrbaxError> {
        let n = self.varint()?;
        let left = (self.data.len() - self.at) as u64;
        if n.saturating_mul(each) > left {
            return Err(self.bad(format!("{n} entries claimed, {left} bytes left")));
        }
        Ok(n as usize)
    }

    /// A data file table; paths are from the database root through `transitive`.
    fn file_table(&mut self, transitive: &str) -> Result<Files, OrbaxError> {
        let n = self.count(2)?;
        let prefixes: Vec<u64> = (0..n.saturating_sub(1))
            .map(|_| self.varint())
            .collect::<Result<_, _>>()?;
        let suffixes: Vec<u64> = (0..n).map(|_| self.varint()).collect::<Result<_, _>>()?;
        let bases: Vec<u64> = (0..n).map(|_| self.varint()).collect::<Result<_, _>>()?;
        let paths = self.keys(&prefixes, &suffixes, &[])?;
        let mut out = Vec::with_capacity(n);
        for (path, base) in paths.into_iter().zip(bases) {
            let path =
                String::from_utf8(path).map_err(|_| self.bad("a path that is not UTF-8".into()))?;
            let base = usize::try_from(base)
                .ok()
                .filter(|&b| b <= path.len() && path.is_char_boundary(b))
                .ok_or_else(|| self.bad("a base path longer than its path".into()))?;
            if path.split('/').any(|s| s == "..") || path.starts_with('/') {
                return Err(self.bad(format!("data file path `{path}` leaves the database")));
            }
            out.push((
                format!("{transitive}{path}"),
                format!("{transitive}{}", &path[..base]),
            ));
        }
        Ok(Files(out))
    }

    /// Prefix-compressed keys: each shares `prefixes[i - 1]` bytes with the one before and
    /// adds `suffixes[i]` bytes, read in one run after the lengths; `base` goes before each.
    fn keys(
        &mut self,
        prefixes: &[u64],
        suffixes: &[u64],
        base: &[u8],
    ) -> Result<Vec<Vec<u8>>, OrbaxError> {
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(suffixes.len());
        for (i, &suffix) in suffixes.iter().enumerate() {
            let shared = if i == 0 { 0 } else { prefixes[i - 1] };
            let previous = out.last().map_or(&[][..], |k| &k[base.len()..]);
            let shared = usize::try_from(shared)
                .ok()
                .filter(|&s| s <= previous.len())
                .ok_or_else(|| self.bad("a key sharing more than the key before has".into()))?;
            let mut key = Vec::with_capacity(base.len() + shared);
            key.extend_from_slice(base);
            key.extend_from_slice(&previous[..shared]);
            key.extend_from_slice(self.take(suffix)?);
            out.push(key);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// An uncompressed encoding of `body` with `magic`.
    fn wrap(magic: u32, body: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        let length = 4 + 8 + 2 + body.len() + 4;
        out.extend((length as u64).to_le_bytes());
        out.extend([0, 0]);
        out.extend(body);
        let crc = crc32c::crc32c(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    fn leaf() -> Vec<u8> {
        let mut b = vec![0u8]; // height
        // data file table: one file "d/x", base "" (no prefix lengths for one file)
        varint(1, &mut b);
        varint(3, &mut b);
        varint(0, &mut b);
        b.extend(b"d/x");
        varint(2, &mut b); // entries
        varint(1, &mut b); // "ab" then "ac": shares 1
        varint(2, &mut b); // suffix lengths
        varint(1, &mut b);
        b.extend(b"abc");
        varint(3, &mut b); // value lengths
        varint(100, &mut b);
        varint(0, &mut b); // kinds: inline, indirect
        varint(1, &mut b);
        varint(0, &mut b); // file id, offset of the indirect one
        varint(7, &mut b);
        b.extend(b"xyz");
        b
    }

    /// A leaf reached from the root, with no prefix.
    fn top() -> NodeRef {
        NodeRef {
            file: String::new(),
            transitive: String::new(),
            offset: 0,
            length: 0,
            height: 0,
            prefix: Vec::new(),
        }
    }

    #[test]
    fn a_leaf_decodes_prefix_compressed_keys_and_both_kinds_of_value() {
        let at = NodeRef {
            transitive: "p/".into(),
            prefix: b"k/".to_vec(),
            ..top()
        };
        let Node::Leaf(entries) = node(&wrap(BTREE_MAGIC, &leaf()), &at).unwrap() else {
            panic!("a leaf")
        };
        assert_eq!(
            entries[0],
            (b"k/ab".to_vec(), Value::Inline(b"xyz".to_vec()))
        );
        assert_eq!(
            entries[1],
            (
                b"k/ac".to_vec(),
                Value::Indirect {
                    file: "p/d/x".into(),
                    offset: 7,
                    length: 100
                }
            )
        );
    }

    #[test]
    fn a_node_with_a_bad_crc_magic_length_or_height_is_refused() {
        let good = wrap(BTREE_MAGIC, &leaf());
        let at = top();
        let mut crc = good.clone();
        let last = crc.len() - 1;
        crc[last] ^= 1;
        assert!(node(&crc, &at).unwrap_err().to_string().contains("CRC-32C"));
        assert!(
            node(&wrap(MANIFEST_MAGIC, &leaf()), &at)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        assert!(node(&good[..good.len() - 1], &at).is_err());
        let tall = NodeRef { height: 1, ..at };
        assert!(
            node(&good, &tall)
                .unwrap_err()
                .to_string()
                .contains("height 0")
        );
    }

    #[test]
    fn lying_counts_and_escaping_paths_are_refused() {
        let mut b = vec![0u8];
        varint(u64::MAX, &mut b);
        let at = top();
        assert!(
            node(&wrap(BTREE_MAGIC, &b), &at)
                .unwrap_err()
                .to_string()
                .contains("claimed")
        );
        let mut b = vec![0u8];
        varint(1, &mut b);
        varint(5, &mut b);
        varint(0, &mut b);
        b.extend(b"../x");
        b.push(0);
        varint(0, &mut b);
        assert!(
            node(&wrap(BTREE_MAGIC, &b), &at)
                .unwrap_err()
                .to_string()
                .contains("leaves")
        );
        let mut r = Reader::new(&[0xff; 11], "test");
        assert!(r.varint().is_err());
    }
}
