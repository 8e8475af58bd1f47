//! Zarr v2 array metadata (`.zarray`) as tensorstore writes it for Orbax: shape, chunk shape,
//! element type, compressor, and how chunk keys are spelled. Pure.

use serde::Deserialize;

use super::OrbaxError;
use crate::dtype::DType;
use crate::tree::MAX_DIMS;

/// What an array's chunks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array {
    /// The array's shape.
    pub shape: Vec<u64>,
    /// Each chunk's shape (edge chunks are stored whole, padded).
    pub chunks: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Elements are big-endian.
    pub big_endian: bool,
    /// Chunks are Zstandard streams (else raw).
    pub zstd: bool,
    /// Between chunk indices in a key (`.` or `/`).
    pub separator: String,
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
    if raw.order != "C" {
        return bad(format!("order {:?} (ckptio reads C order)", raw.order));
    }
    if raw.filters.as_ref().is_some_and(|f| !f.is_empty()) {
        return bad("filters (ckptio reads unfiltered chunks)".into());
    }
    let zstd = match raw.compressor.as_ref().map(|c| c.id.as_str()) {
        None => false,
        Some("zstd") => true,
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
        zstd,
        separator: raw.dimension_separator,
    })
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

    /// The key of the chunk at grid position `index` (`0.1`; `0` for a 0-d array).
    pub fn chunk_key(&self, index: &[u64]) -> String {
        if index.is_empty() {
            return "0".into();
        }
        let parts: Vec<String> = index.iter().map(u64::to_string).collect();
        parts.join(&self.separator)
    }

    /// Bytes of one whole chunk.
    pub fn chunk_bytes(&self) -> Option<u64> {
        self.dtype.byte_len(crate::dtype::numel(&self.chunks)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorstores_metadata_parses() {
        let a = parse(br#"{"chunks":[3,4],"compressor":{"id":"zstd","level":1},"dimension_separator":".","dtype":"<f4","fill_value":null,"filters":null,"order":"C","shape":[5,4],"zarr_format":2}"#).unwrap();
        assert_eq!((a.dtype, a.zstd, a.big_endian), (DType::F32, true, false));
        assert_eq!(a.grid(), [2, 1]);
        assert_eq!(a.chunk_key(&[1, 0]), "1.0");
        assert_eq!(a.chunk_bytes(), Some(48));
        let s = parse(
            br#"{"chunks":[],"compressor":null,"dtype":"bfloat16","shape":[],"zarr_format":2}"#,
        )
        .unwrap();
        assert_eq!(
            (s.dtype, s.zstd, s.chunk_key(&[])),
            (DType::BF16, false, "0".into())
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
}
