//! The GGUF header: magic, version, typed metadata key/values and tensor infos, up to where the
//! tensor data starts. Pure and bounded: every length is checked against the bytes there
//! are before anything is allocated for it, nesting is limited, and a header cut short by the
//! caller's prefix asks for more instead of failing.

use super::ggml;

/// The most dimensions ggml gives a tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// How deep arrays of arrays may nest.
const MAX_NESTING: usize = 16;

/// Where tensor data is aligned when `general.alignment` does not say (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A parsed header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Whether the file is big-endian (GGUF v3 allows it).
    pub big_endian: bool,
    /// The metadata key/values, in file order.
    pub metadata: Vec<(String, Value)>,
    /// The tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// What tensor offsets are multiples of.
    pub alignment: u64,
    /// Where tensor data starts: offsets count from here.
    pub data_start: u64,
}

/// One tensor's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Its dimensions as GGUF lists them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// Its ggml type number ([`ggml::by_id`]).
    pub ggml_type: u32,
    /// Where its bytes start, from [`Header::data_start`].
    pub offset: u64,
    /// How many bytes it has, when its type is known.
    pub nbytes: Option<u64>,
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as JSON (a non-finite float as `null`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::U8(v) => J::from(*v),
            Self::I8(v) => J::from(*v),
            Self::U16(v) => J::from(*v),
            Self::I16(v) => J::from(*v),
            Self::U32(v) => J::from(*v),
            Self::I32(v) => J::from(*v),
            Self::U64(v) => J::from(*v),
            Self::I64(v) => J::from(*v),
            Self::F32(v) => J::from(*v),
            Self::F64(v) => J::from(*v),
            Self::Bool(v) => J::from(*v),
            Self::String(v) => J::from(v.as_str()),
            Self::Array(v) => J::Array(v.iter().map(Self::to_json).collect()),
        }
    }

    /// The value as text: a string as itself, anything else as JSON.
    pub fn to_text(&self) -> String {
        match self {
            Self::String(s) => s.clone(),
            other => other.to_json().to_string(),
        }
    }
}

/// What is wrong with a header, or that more of it is needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The bytes given end inside the header; the first `needed` bytes of the file hold at
    /// least this much more of it.
    #[error("the header continues past byte {needed}")]
    Incomplete {
        /// Bytes from the start of the file to read before parsing again.
        needed: u64,
    },
    /// Not GGUF.
    #[error("not a GGUF file (it does not start with `GGUF`)")]
    Magic,
    /// A version ckptio does not read.
    #[error("GGUF version {0} (ckptio reads versions 2 and 3)")]
    Version(u32),
    /// The file ends inside the header, or a length claims more than the file holds.
    #[error("{what} at byte {at} runs past the end of the {size}-byte file")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        at: u64,
        /// The file's size.
        size: u64,
    },
    /// Anything else.
    #[error("{0}")]
    Invalid(String),
}

/// Parses the header from the first bytes of a `size`-byte file.
///
/// # Errors
///
/// [`GgufError::Incomplete`] when `data` ends inside the header and the file goes on; any
/// other variant for a file that is not valid GGUF.
pub fn parse(data: &[u8], size: u64) -> Result<Header, GgufError> {
    let mut r = Reader {
        data,
        at: 0,
        size,
        big_endian: false,
    };
    if r.take(4, "the magic")? != b"GGUF" {
        return Err(GgufError::Magic);
    }
    let raw = r.take(4, "the version")?;
    let le = u32::from_le_bytes(raw.try_into().expect("4 bytes"));
    let version = match le {
        2 | 3 => le,
        _ if matches!(le.swap_bytes(), 2 | 3) => {
            r.big_endian = true;
            le.swap_bytes()
        }
        other => return Err(GgufError::Version(other)),
    };
    let tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the metadata count")?;
    // Each key/value takes at least 12 bytes and each tensor info 24: claims beyond what the
    // file could hold are refused before anything is sized by them.
    r.claim(kv_count, 12, "metadata entries")?;
    r.claim(tensor_count, 24, "tensor infos")?;
    let mut metadata = Vec::with_capacity(bounded(kv_count, r.left_in_data(), 12));
    for _ in 0..kv_count {
        let key = r.string("a metadata key")?;
        let kind = r.u32("a metadata type")?;
        let value = r.value(kind, &key, 0)?;
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, other)) => {
            return Err(GgufError::Invalid(format!(
                "general.alignment is {}, not a power of two as a u32",
                other.to_text()
            )));
        }
    };
    let mut tensors: Vec<TensorInfo> =
        Vec::with_capacity(bounded(tensor_count, r.left_in_data(), 24));
    for _ in 0..tensor_count {
        tensors.push(r.tensor_info()?);
    }
    let data_start = r.at.next_multiple_of(alignment);
    check_tensors(&tensors, alignment, data_start, size)?;
    Ok(Header {
        version,
        big_endian: r.big_endian,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// How many of `claimed` items of at least `each` bytes fit in `left` bytes: what a vector is
/// sized for up front.
fn bounded(claimed: u64, left: u64, each: u64) -> usize {
    usize::try_from(claimed.min(left / each)).unwrap_or(usize::MAX)
}

/// Names unique; offsets aligned; every tensor of a known type inside the file.
fn check_tensors(
    tensors: &[TensorInfo],
    alignment: u64,
    data_start: u64,
    size: u64,
) -> Result<(), GgufError> {
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(GgufError::Invalid(format!(
            "tensor `{}` appears twice",
            w[0]
        )));
    }
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::Invalid(format!(
                "tensor `{}` starts at offset {}, not a multiple of the {alignment}-byte alignment",
                t.name, t.offset
            )));
        }
        let Some(nbytes) = t.nbytes else { continue };
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(nbytes));
        if end.is_none_or(|end| end > size) {
            return Err(GgufError::Invalid(format!(
                "tensor `{}` ({nbytes} bytes at offset {} from byte {data_start}) runs past the \
                 end of the {size}-byte file",
                t.name, t.offset
            )));
        }
    }
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    at: u64,
    size: u64,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    fn left_in_data(&self) -> u64 {
        self.data.len() as u64 - self.at
    }

    /// Refuses `count` items of at least `each` bytes that the rest of the file cannot hold.
    fn claim(&self, count: u64, each: u64, what: &str) -> Result<(), GgufError> {
        let need = count.saturating_mul(each);
        if need > self.size.saturating_sub(self.at) {
            return Err(GgufError::Truncated {
                what: format!("{count} {what}"),
                at: self.at,
                size: self.size,
            });
        }
        Ok(())
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.size);
        let Some(end) = end else {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                at: self.at,
                size: self.size,
            });
        };
        if end > self.data.len() as u64 {
            return Err(GgufError::Incomplete { needed: end });
        }
        let bytes = &self.data[self.at as usize..end as usize];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut bytes: [u8; N] = self.take(N as u64, what)?.try_into().expect("N bytes");
        if self.big_endian {
            bytes.reverse();
        }
        Ok(bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.at;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| GgufError::Invalid(format!("{what} at byte {at} is not UTF-8")))
    }

    fn value(&mut self, kind: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("the value of `{key}`");
        Ok(match kind {
            0 => Value::U8(u8::from_le_bytes(self.array(&what())?)),
            1 => Value::I8(i8::from_le_bytes(self.array(&what())?)),
            2 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what())?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => match self.take(1, &what())?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::Invalid(format!(
                        "{} is the byte {b}, not a bool",
                        what()
                    )));
                }
            },
            8 => Value::String(self.string(&what())?),
            9 => {
                if depth == MAX_NESTING {
                    return Err(GgufError::Invalid(format!(
                        "{} nests arrays more than {MAX_NESTING} deep",
                        what()
                    )));
                }
                let inner = self.u32(&what())?;
                let len = self.u64(&what())?;
                let each = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => 12,
                };
                self.claim(len, each, &format!("elements of {}", what()))?;
                let mut items = Vec::with_capacity(bounded(len, self.left_in_data(), each));
                for _ in 0..len {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what())?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            other => {
                return Err(GgufError::Invalid(format!(
                    "{} has type {other}, which GGUF does not define",
                    what()
                )));
            }
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, GgufError> {
        let name = self.string("a tensor name")?;
        let n_dims = self.u32("a tensor's dimension count")?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::Invalid(format!(
                "tensor `{name}` has {n_dims} dimensions (ggml allows {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("a tensor's dimension")?);
        }
        let ggml_type = self.u32("a tensor's type")?;
        let offset = self.u64("a tensor's offset")?;
        let nbytes = match ggml::by_id(ggml_type) {
            None => None,
            Some(t) => Some(tensor_bytes(t, &dims).ok_or_else(|| {
                GgufError::Invalid(format!(
                    "tensor `{name}` of {} {dims:?} is not whole {}-value blocks, or too large",
                    t.name, t.block_values
                ))
            })?),
        };
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            nbytes,
        })
    }
}

/// Bytes of a tensor of type `t` and GGUF dimensions `dims` (innermost first).
fn tensor_bytes(t: &ggml::GgmlType, dims: &[u64]) -> Option<u64> {
    let row = t.row_bytes(dims.first().copied().unwrap_or(1))?;
    dims.iter()
        .skip(1)
        .try_fold(row, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor info: name, dims (innermost first), ggml type, offset.
    type Info<'a> = (&'a str, &'a [u64], u32, u64);

    /// A little-endian GGUF v3 header: `kvs` as (key, type, value bytes), then `tensors`.
    fn build(kvs: &[(&str, u32, Vec<u8>)], tensors: &[Info<'_>]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        for (k, kind, v) in kvs {
            string(&mut b, k);
            b.extend(kind.to_le_bytes());
            b.extend(v);
        }
        for (name, dims, kind, offset) in tensors {
            string(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
            b.extend(kind.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        b
    }

    fn str_value(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend(s.as_bytes());
        v
    }

    fn file(header: Vec<u8>, data: usize) -> Vec<u8> {
        let mut f = header;
        f.resize(f.len().next_multiple_of(32) + data, 0);
        f
    }

    #[test]
    fn a_header_parses_with_metadata_tensors_and_the_data_start() {
        let mut array = 8u32.to_le_bytes().to_vec();
        array.extend(2u64.to_le_bytes());
        array.extend(str_value("a"));
        array.extend(str_value("bc"));
        let h = build(
            &[
                ("general.name", 8, str_value("tiny")),
                ("tokens", 9, array),
                ("n", 4, 7u32.to_le_bytes().to_vec()),
            ],
            &[("w", &[4, 2], 0, 0), ("q", &[32], 8, 32)],
        );
        let header_len = h.len() as u64;
        let f = file(h, 32 + 34);
        let parsed = parse(&f, f.len() as u64).unwrap();
        assert_eq!(parsed.version, 3);
        assert_eq!(parsed.metadata[0].1, Value::String("tiny".into()));
        assert_eq!(parsed.metadata[1].1.to_text(), r#"["a","bc"]"#);
        assert_eq!(parsed.metadata[2].1.to_text(), "7");
        assert_eq!(parsed.data_start, header_len.next_multiple_of(32));
        assert_eq!(parsed.tensors[0].nbytes, Some(32));
        assert_eq!(parsed.tensors[1].nbytes, Some(34));
    }

    #[test]
    fn a_short_prefix_asks_for_more_and_a_short_file_is_truncated() {
        let h = build(
            &[("general.name", 8, str_value("tiny"))],
            &[("w", &[4], 0, 0)],
        );
        let f = file(h, 16);
        let size = f.len() as u64;
        for cut in [0, 3, 10, 30, 50] {
            assert!(
                matches!(parse(&f[..cut], size), Err(GgufError::Incomplete { needed }) if needed > cut as u64),
                "{cut}"
            );
        }
        let short = &f[..40];
        assert!(matches!(
            parse(short, short.len() as u64),
            Err(GgufError::Truncated { .. })
        ));
    }

    #[test]
    fn lying_lengths_are_refused_without_allocating_for_them() {
        let mut h = build(&[], &[]);
        h[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = parse(&h, h.len() as u64).unwrap_err();
        assert!(e.to_string().contains("tensor infos"), "{e}");
        let mut array = 0u32.to_le_bytes().to_vec();
        array.extend((1u64 << 60).to_le_bytes());
        let h = build(&[("a", 9, array)], &[]);
        let e = parse(&h, 1 << 20).unwrap_err();
        assert!(
            e.to_string().contains("elements of the value of `a`"),
            "{e}"
        );
        let h = build(&[("k", 8, (1u64 << 62).to_le_bytes().to_vec())], &[]);
        assert!(matches!(
            parse(&h, 1 << 20),
            Err(GgufError::Truncated { .. })
        ));
    }

    #[test]
    fn deep_nesting_and_unknown_value_types_are_refused() {
        let mut v = Vec::new();
        for _ in 0..=MAX_NESTING {
            v.extend(9u32.to_le_bytes());
            v.extend(1u64.to_le_bytes());
        }
        v.extend(0u32.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        v.push(0);
        let h = build(&[("deep", 9, v)], &[]);
        assert!(
            parse(&h, h.len() as u64)
                .unwrap_err()
                .to_string()
                .contains("nests")
        );
        let h = build(&[("odd", 13, vec![])], &[]);
        assert!(
            parse(&h, h.len() as u64)
                .unwrap_err()
                .to_string()
                .contains("type 13")
        );
    }

    #[test]
    fn tensors_must_be_aligned_inside_the_file_unique_and_whole_blocks() {
        let cases: [(&[Info<'_>], &str); 5] = [
            (&[("w", &[4], 0, 8)], "not a multiple"),
            (&[("w", &[4], 0, 64)], "runs past the end"),
            (&[("w", &[4], 0, 0), ("w", &[1], 0, 32)], "appears twice"),
            (&[("q", &[31], 8, 0)], "whole 32-value blocks"),
            (&[("w", &[1, 1, 1, 1, 1], 0, 0)], "5 dimensions"),
        ];
        for (tensors, says) in cases {
            let f = file(build(&[], tensors), 32);
            let e = parse(&f, f.len() as u64).unwrap_err().to_string();
            assert!(e.contains(says), "{e} should say {says}");
        }
    }

    #[test]
    fn versions_and_byte_order_are_recognised() {
        let mut h = build(&[], &[]);
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(parse(&h, h.len() as u64), Err(GgufError::Version(1)));
        h[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse(&h, h.len() as u64).unwrap().version, 2);
        // Big-endian: every number swapped.
        let mut be = b"GGUF".to_vec();
        be.extend(3u32.to_be_bytes());
        be.extend(0u64.to_be_bytes());
        be.extend(1u64.to_be_bytes());
        be.extend(1u64.to_be_bytes());
        be.push(b'n');
        be.extend(4u32.to_be_bytes());
        be.extend(7u32.to_be_bytes());
        let parsed = parse(&be, be.len() as u64).unwrap();
        assert!(parsed.big_endian);
        assert_eq!(parsed.metadata, [("n".into(), Value::U32(7))]);
        let mut odd = build(
            &[("general.alignment", 4, 24u32.to_le_bytes().to_vec())],
            &[],
        );
        odd.truncate(odd.len());
        assert!(
            parse(&odd, odd.len() as u64)
                .unwrap_err()
                .to_string()
                .contains("power of two")
        );
    }
}
