//! Zarr arrays as tensorstore writes them for Orbax: v2 metadata (`.zarray`) and v3
//! (`zarr.json`, with the `sharding_indexed` codec whose index is CRC-32C checked), what a
//! chunk's key is, and how its stored bytes become its elements. Pure.

use serde::Deserialize;

use super::OrbaxError;
use crate::dtype::DType;
use crate::tree::MAX_DIMS;

/// What an array's chunks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array {
    /// The array's shape.
    pub shape: Vec<u64>,
    /// Each chunk's shape (edge chunks are stored whole, padded); for a sharded array, each
    /// shard's.
    pub chunks: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Elements are big-endian.
    pub big_endian: bool,
    /// How a stored chunk becomes its elements.
    pub codec: Codec,
    /// Before the chunk indices in a key (`c/` in zarr v3's default encoding).
    pub key_prefix: String,
    /// Between chunk indices in a key (`.` or `/`).
    pub separator: String,
}

/// How a stored chunk becomes its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// The elements as they are.
    Raw,
    /// A Zstandard stream of them.
    Zstd,
    /// Zarr v3's `sharding_indexed`: inner chunks (each raw or zstd), and an index of
    /// `(offset, length)` pairs, little-endian, at the start or end.
    Sharded {
        /// Each inner chunk's shape.
        inner: Vec<u64>,
        /// Inner chunks are Zstandard streams.
        zstd: bool,
        /// The index is followed by its CRC-32C.
        crc: bool,
        /// The index is at the end (else the start).
        at_end: bool,
    },
}

#[derive(Deserialize)]
struct Raw {
    zarr_format: u8,
    shape: Vec<u64>,
    chunks: Vec<u64>,
    dtype: String,
    compressor: Option<Compressor>,
    #[serde(default)]
    filters: Option<Vec<serde_json::Value>>,
    #[serde(default = "row_major")]
    order: String,
    #[serde(default = "dot")]
    dimension_separator: String,
}

#[derive(Deserialize)]
struct Compressor {
    id: String,
}

fn row_major() -> String {
    "C".into()
}

fn dot() -> String {
    ".".into()
}

/// A parser of one zarr version's array metadata.
pub type Parser = fn(&[u8]) -> Result<Array, OrbaxError>;

/// Parses a `.zarray` document.
///
/// # Errors
///
/// [`OrbaxError::Zarr`] for JSON that is not zarr v2 metadata, or a layout ckptio does not
/// read (column-major order, filters, a compressor other than zstd, an unknown dtype).
pub fn parse(data: &[u8]) -> Result<Array, OrbaxError> {
    let raw: Raw = serde_json::from_slice(data)
        .map_err(|e| OrbaxError::Zarr(format!("not zarr v2 metadata: {e}")))?;
    let bad = |why: String| Err(OrbaxError::Zarr(why));
    if raw.zarr_format != 2 {
        return bad(format!("zarr_format {}", raw.zarr_format));
    }
    if raw.shape.len() != raw.chunks.len() || raw.shape.len() > MAX_DIMS {
        return bad(format!(
            "shape {:?} and chunks {:?} do not fit together",
            raw.shape, raw.chunks
        ));
    }
    if raw.chunks.contains(&0) {
        return bad(format!(
            "a chunk shape {:?} with an empty dimension",
            raw.chunks
        ));
    }
    chunks_within(&raw.shape, &raw.chunks)?;
    if raw.order != "C" {
        return bad(format!("order {:?} (ckptio reads C order)", raw.order));
    }
    if raw.filters.as_ref().is_some_and(|f| !f.is_empty()) {
        return bad("filters (ckptio reads unfiltered chunks)".into());
    }
    let codec = match raw.compressor.as_ref().map(|c| c.id.as_str()) {
        None => Codec::Raw,
        Some("zstd") => Codec::Zstd,
        Some(other) => return bad(format!("compressor `{other}` (ckptio reads zstd)")),
    };
    if !matches!(raw.dimension_separator.as_str(), "." | "/") {
        return bad(format!("dimension separator {:?}", raw.dimension_separator));
    }
    let (dtype, big_endian) = dtype(&raw.dtype).ok_or_else(|| {
        OrbaxError::Zarr(format!("dtype `{}`, which ckptio does not read", raw.dtype))
    })?;
    Ok(Array {
        shape: raw.shape,
        chunks: raw.chunks,
        dtype,
        big_endian,
        codec,
        key_prefix: String::new(),
        separator: raw.dimension_separator,
    })
}

#[derive(Deserialize)]
struct RawV3 {
    zarr_format: u8,
    shape: Vec<u64>,
    data_type: String,
    chunk_grid: Named,
    #[serde(default)]
    chunk_key_encoding: Option<Named>,
    codecs: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
    #[serde(default)]
    configuration: serde_json::Value,
}

/// Parses a zarr v3 `zarr.json` of an array.
///
/// # Errors
///
/// [`OrbaxError::Zarr`] for JSON that is not zarr v3 array metadata, or codecs ckptio does not
/// read (anything but `bytes`, `zstd`, `crc32c` and `sharding_indexed` of those).
pub fn parse_v3(data: &[u8]) -> Result<Array, OrbaxError> {
    let raw: RawV3 = serde_json::from_slice(data)
        .map_err(|e| OrbaxError::Zarr(format!("not zarr v3 array metadata: {e}")))?;
    let bad = |why: String| OrbaxError::Zarr(why);
    if raw.zarr_format != 3 {
        return Err(bad(format!("zarr_format {}", raw.zarr_format)));
    }
    if raw.chunk_grid.name != "regular" {
        return Err(bad(format!("a `{}` chunk grid", raw.chunk_grid.name)));
    }
    let chunks: Vec<u64> = shape_of(&raw.chunk_grid.configuration["chunk_shape"])
        .ok_or_else(|| bad("a chunk grid without a chunk shape".into()))?;
    if raw.shape.len() != chunks.len() || raw.shape.len() > MAX_DIMS || chunks.contains(&0) {
        return Err(bad(format!(
            "shape {:?} and chunks {chunks:?} do not fit together",
            raw.shape
        )));
    }
    chunks_within(&raw.shape, &chunks)?;
    let (key_prefix, separator) = match &raw.chunk_key_encoding {
        None => ("c/".to_owned(), "/".to_owned()),
        Some(k) => {
            let sep = k.configuration["separator"].as_str();
            match k.name.as_str() {
                "default" => (
                    "c".to_owned() + sep.unwrap_or("/"),
                    sep.unwrap_or("/").to_owned(),
                ),
                "v2" => (String::new(), sep.unwrap_or(".").to_owned()),
                other => return Err(bad(format!("chunk key encoding `{other}`"))),
            }
        }
    };
    let dtype = v3_dtype(&raw.data_type).ok_or_else(|| {
        bad(format!(
            "data type `{}`, which ckptio does not read",
            raw.data_type
        ))
    })?;
    let (big_endian, codec) = match raw.codecs.as_slice() {
        [sharding] if sharding.name == "sharding_indexed" => {
            let c = &sharding.configuration;
            let inner = shape_of(&c["chunk_shape"])
                .filter(|i| {
                    i.len() == chunks.len()
                        && i.iter().zip(&chunks).all(|(i, o)| *i > 0 && o % i == 0)
                })
                .ok_or_else(|| {
                    bad(format!(
                        "inner chunks that do not tile the shard {chunks:?}"
                    ))
                })?;
            let inner_codecs: Vec<Named> = serde_json::from_value(c["codecs"].clone())
                .map_err(|e| bad(format!("inner codecs: {e}")))?;
            let (big, zstd) = chunk_codecs(&inner_codecs)?;
            let index: Vec<Named> = serde_json::from_value(c["index_codecs"].clone())
                .map_err(|e| bad(format!("index codecs: {e}")))?;
            let crc = match index.as_slice() {
                [b] if b.name == "bytes" && endian(b) == Some(false) => false,
                [b, c] if b.name == "bytes" && endian(b) == Some(false) && c.name == "crc32c" => {
                    true
                }
                _ => {
                    return Err(bad(
                        "a shard index not little-endian bytes (with crc32c)".into()
                    ));
                }
            };
            let at_end = match c["index_location"].as_str() {
                None | Some("end") => true,
                Some("start") => false,
                Some(other) => return Err(bad(format!("index location `{other}`"))),
            };
            (
                big,
                Codec::Sharded {
                    inner,
                    zstd,
                    crc,
                    at_end,
                },
            )
        }
        codecs => {
            let (big, zstd) = chunk_codecs(codecs)?;
            (big, if zstd { Codec::Zstd } else { Codec::Raw })
        }
    };
    Ok(Array {
        shape: raw.shape,
        chunks,
        dtype,
        big_endian,
        codec,
        key_prefix,
        separator,
    })
}

fn shape_of(v: &serde_json::Value) -> Option<Vec<u64>> {
    v.as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect()
}

fn endian(codec: &Named) -> Option<bool> {
    match codec.configuration.get("endian").and_then(|e| e.as_str()) {
        None | Some("little") => Some(false),
        Some("big") => Some(true),
        Some(_) => None,
    }
}

/// `bytes` (its endianness), then optionally `zstd`.
fn chunk_codecs(codecs: &[Named]) -> Result<(bool, bool), OrbaxError> {
    let bad = |why: String| OrbaxError::Zarr(why);
    let big =
        |b: &Named| endian(b).ok_or_else(|| bad("a `bytes` codec of unknown endianness".into()));
    match codecs {
        [b] if b.name == "bytes" => Ok((big(b)?, false)),
        [b, z] if b.name == "bytes" && z.name == "zstd" => Ok((big(b)?, true)),
        _ => {
            let names: Vec<&str> = codecs.iter().map(|c| c.name.as_str()).collect();
            Err(bad(format!(
                "codecs {names:?} (ckptio reads bytes, then zstd)"
            )))
        }
    }
}

/// A zarr v3 data type.
fn v3_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "bool" => DType::BOOL,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "int16" => DType::I16,
        "uint16" => DType::U16,
        "int32" => DType::I32,
        "uint32" => DType::U32,
        "int64" => DType::I64,
        "uint64" => DType::U64,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float32" => DType::F32,
        "float64" => DType::F64,
        "complex64" => DType::C64,
        "complex128" => DType::C128,
        "float8_e4m3fn" => DType::F8_E4M3,
        "float8_e5m2" => DType::F8_E5M2,
        _ => return None,
    })
}

/// Refuses a chunk larger than the array along any dimension: a chunk is allocated whole when
/// it is read, so its size must not be a claim the array's own shape does not back.
fn chunks_within(shape: &[u64], chunks: &[u64]) -> Result<(), OrbaxError> {
    if chunks.iter().zip(shape).any(|(c, s)| *c > (*s).max(1)) {
        return Err(OrbaxError::Zarr(format!(
            "chunks {chunks:?} larger than the array {shape:?}"
        )));
    }
    Ok(())
}

/// A zarr v2 dtype (numpy's spelling, or tensorstore's names for the types numpy lacks).
fn dtype(name: &str) -> Option<(DType, bool)> {
    let named = match name {
        "bfloat16" => Some(DType::BF16),
        "float8_e4m3fn" => Some(DType::F8_E4M3),
        "float8_e5m2" => Some(DType::F8_E5M2),
        "float8_e4m3fnuz" => Some(DType::F8_E4M3FNUZ),
        "float8_e5m2fnuz" => Some(DType::F8_E5M2FNUZ),
        _ => None,
    };
    if let Some(d) = named {
        return Some((d, false));
    }
    let (order, code) = name.split_at_checked(1)?;
    let big = match order {
        "<" | "|" => false,
        ">" => true,
        _ => return None,
    };
    let d = match code {
        "b1" => DType::BOOL,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "u2" => DType::U16,
        "i2" => DType::I16,
        "u4" => DType::U32,
        "i4" => DType::I32,
        "u8" => DType::U64,
        "i8" => DType::I64,
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "c8" => DType::C64,
        "c16" => DType::C128,
        _ => return None,
    };
    Some((d, big))
}

impl Array {
    /// The chunk grid: how many chunks along each dimension.
    pub fn grid(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunks)
            .map(|(s, c)| s.div_ceil(*c))
            .collect()
    }

    /// The key of the chunk at grid position `index` (v2: `0.1`, `0` for a 0-d array; v3:
    /// `c/0/1`, `c` for a 0-d array).
    pub fn chunk_key(&self, index: &[u64]) -> String {
        let parts: Vec<String> = index.iter().map(u64::to_string).collect();
        match (self.key_prefix.as_str(), index.is_empty()) {
            ("", true) => "0".into(),
            ("", false) => parts.join(&self.separator),
            (prefix, true) => prefix.trim_end_matches(self.separator.as_str()).to_owned(),
            (prefix, false) => format!("{prefix}{}", parts.join(&self.separator)),
        }
    }

    /// A stored chunk's elements, `whole` bytes of them, in C order: decompressed, and for a
    /// shard its inner chunks found through its (checked) index and put in place; an inner
    /// chunk never written is zeros.
    ///
    /// # Errors
    ///
    /// A sentence saying what does not fit.
    pub fn decode(&self, stored: &[u8], whole: u64) -> Result<bytes::Bytes, String> {
        let bytes = match &self.codec {
            Codec::Raw => bytes::Bytes::copy_from_slice(stored),
            Codec::Zstd => crate::format::zstd::decompress(stored, whole)?,
            Codec::Sharded {
                inner,
                zstd,
                crc,
                at_end,
            } => self.unshard(stored, whole, inner, *zstd, *crc, *at_end)?,
        };
        if bytes.len() as u64 != whole {
            return Err(format!(
                "holds {} bytes, a chunk of {} × {:?} has {whole}",
                bytes.len(),
                self.dtype,
                self.chunks
            ));
        }
        Ok(bytes)
    }

    fn unshard(
        &self,
        stored: &[u8],
        whole: u64,
        inner: &[u64],
        zstd: bool,
        crc: bool,
        at_end: bool,
    ) -> Result<bytes::Bytes, String> {
        let grid: Vec<u64> = self.chunks.iter().zip(inner).map(|(o, i)| o / i).collect();
        let n = crate::dtype::numel(&grid).ok_or("too many inner chunks")?;
        let index_len = n
            .checked_mul(16)
            .and_then(|l| l.checked_add(if crc { 4 } else { 0 }))
            .filter(|&l| l <= stored.len() as u64)
            .ok_or_else(|| {
                format!(
                    "a shard of {} bytes too short for its index of {n} chunks",
                    stored.len()
                )
            })? as usize;
        let index = if at_end {
            &stored[stored.len() - index_len..]
        } else {
            &stored[..index_len]
        };
        let (pairs, sum) = index.split_at(n as usize * 16);
        if crc {
            let want = u32::from_le_bytes(sum.try_into().expect("4 bytes"));
            let found = crc32c::crc32c(pairs);
            if want != found {
                return Err(format!(
                    "a shard index with CRC-32C {found:08x}, not {want:08x}"
                ));
            }
        }
        let elem = (self.dtype.bits() / 8) as usize;
        let inner_bytes = crate::dtype::numel(inner)
            .and_then(|v| self.dtype.byte_len(v))
            .ok_or("inner chunks too large")?;
        let mut out = vec![0u8; usize::try_from(whole).map_err(|_| "a shard too large")?];
        for (i, pair) in pairs.chunks_exact(16).enumerate() {
            let offset = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
            let length = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
            if offset == u64::MAX && length == u64::MAX {
                continue;
            }
            let span = offset
                .checked_add(length)
                .filter(|&end| end <= stored.len() as u64)
                .ok_or_else(|| {
                    format!("inner chunk {i} at {offset}+{length} lies outside the shard")
                })?;
            let data = &stored[offset as usize..span as usize];
            let plain = if zstd {
                crate::format::zstd::decompress(data, inner_bytes)?
            } else {
                bytes::Bytes::copy_from_slice(data)
            };
            if plain.len() as u64 != inner_bytes {
                return Err(format!(
                    "inner chunk {i} holds {} bytes, not {inner_bytes}",
                    plain.len()
                ));
            }
            place(&mut out, &self.chunks, &plain, inner, &grid, i as u64, elem);
        }
        Ok(out.into())
    }

    /// Bytes of one whole chunk.
    pub fn chunk_bytes(&self) -> Option<u64> {
        self.dtype.byte_len(crate::dtype::numel(&self.chunks)?)
    }
}

/// Copies inner chunk number `i` (C order over `grid`) of shape `inner` into the C-order
/// `out` of shape `outer`.
fn place(
    out: &mut [u8],
    outer: &[u64],
    part: &[u8],
    inner: &[u64],
    grid: &[u64],
    i: u64,
    elem: usize,
) {
    let dims = outer.len();
    if dims == 0 {
        out[..elem].copy_from_slice(&part[..elem]);
        return;
    }
    // The chunk's origin, in elements along each dimension.
    let mut origin = vec![0u64; dims];
    let mut rest = i;
    for d in (0..dims).rev() {
        origin[d] = rest % grid[d] * inner[d];
        rest /= grid[d];
    }
    let row = inner[dims - 1] as usize * elem;
    let rows = crate::dtype::numel(&inner[..dims - 1]).unwrap_or(0);
    let strides = crate::tree::contiguous_strides(outer);
    for r in 0..rows {
        // The row's position inside the chunk, then in the shard.
        let mut rest = r;
        let mut at = origin[dims - 1];
        for d in (0..dims - 1).rev() {
            at += (origin[d] + rest % inner[d]) * strides[d];
            rest /= inner[d];
        }
        let at = at as usize * elem;
        out[at..at + row].copy_from_slice(&part[r as usize * row..(r as usize + 1) * row]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorstores_metadata_parses() {
        let a = parse(br#"{"chunks":[3,4],"compressor":{"id":"zstd","level":1},"dimension_separator":".","dtype":"<f4","fill_value":null,"filters":null,"order":"C","shape":[5,4],"zarr_format":2}"#).unwrap();
        assert_eq!(
            (a.dtype, &a.codec, a.big_endian),
            (DType::F32, &Codec::Zstd, false)
        );
        assert_eq!(a.grid(), [2, 1]);
        assert_eq!(a.chunk_key(&[1, 0]), "1.0");
        assert_eq!(a.chunk_bytes(), Some(48));
        let s = parse(
            br#"{"chunks":[],"compressor":null,"dtype":"bfloat16","shape":[],"zarr_format":2}"#,
        )
        .unwrap();
        assert_eq!(
            (s.dtype, &s.codec, s.chunk_key(&[])),
            (DType::BF16, &Codec::Raw, "0".into())
        );
    }

    #[test]
    fn layouts_ckptio_does_not_read_are_named() {
        for (doc, says) in [
            (
                r#"{"chunks":[2],"compressor":{"id":"blosc"},"dtype":"<f4","shape":[2],"zarr_format":2}"#,
                "blosc",
            ),
            (
                r#"{"chunks":[2],"compressor":null,"dtype":"<f4","shape":[2],"order":"F","zarr_format":2}"#,
                "order",
            ),
            (
                r#"{"chunks":[2],"compressor":null,"dtype":"int4","shape":[2],"zarr_format":2}"#,
                "int4",
            ),
            (
                r#"{"chunks":[0],"compressor":null,"dtype":"<f4","shape":[2],"zarr_format":2}"#,
                "empty",
            ),
            (
                r#"{"chunks":[2,2],"compressor":null,"dtype":"<f4","shape":[2],"zarr_format":2}"#,
                "fit",
            ),
            (r#"{"zarr_format":3}"#, "not zarr v2"),
        ] {
            let e = parse(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(says), "{e}: {says}");
        }
    }

    #[test]
    fn a_shard_of_inner_chunks_is_put_together_through_its_checked_index() {
        // A 4×4 u8 shard of four 2×2 inner chunks, the third never written.
        let array = Array {
            shape: vec![4, 4],
            chunks: vec![4, 4],
            dtype: DType::U8,
            big_endian: false,
            codec: Codec::Sharded {
                inner: vec![2, 2],
                zstd: false,
                crc: true,
                at_end: true,
            },
            key_prefix: "c/".into(),
            separator: "/".into(),
        };
        let chunks: [&[u8]; 4] = [&[1, 2, 5, 6], &[3, 4, 7, 8], &[], &[11, 12, 15, 16]];
        let mut stored = Vec::new();
        let mut index = Vec::new();
        for c in chunks {
            if c.is_empty() {
                index.extend(u64::MAX.to_le_bytes());
                index.extend(u64::MAX.to_le_bytes());
            } else {
                index.extend((stored.len() as u64).to_le_bytes());
                index.extend((c.len() as u64).to_le_bytes());
                stored.extend(c);
            }
        }
        let crc = crc32c::crc32c(&index);
        stored.extend(&index);
        stored.extend(crc.to_le_bytes());
        let got = array.decode(&stored, 16).unwrap();
        assert_eq!(
            &got[..],
            [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 11, 12, 0, 0, 15, 16]
        );
        assert_eq!(array.chunk_key(&[1, 0]), "c/1/0");
        let mut bad_crc = stored.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert!(array.decode(&bad_crc, 16).unwrap_err().contains("CRC-32C"));
        // The first chunk's offset moved past the shard, with a CRC that matches.
        let mut outside = stored[..12].to_vec();
        let mut index = index.clone();
        index[0] = 200;
        outside.extend(&index);
        outside.extend(crc32c::crc32c(&index).to_le_bytes());
        let err = array.decode(&outside, 16).unwrap_err();
        assert!(err.contains("lies outside the shard"), "{err}");
    }
}
