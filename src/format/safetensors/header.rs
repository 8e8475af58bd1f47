//! The safetensors header, both ways: an 8-byte little-endian length N, N bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {..}}`), then the data.
//! [`parse`] never trusts what it reads; [`render`] writes what [`parse`] accepts. Pure.

use std::collections::BTreeMap;
use std::ops::Range;

use super::entries::{self, Field, MAX_METADATA_ENTRIES, METADATA_KEY, Metadata, RawEntry, Stop};
use crate::dtype::{self, DType};
use crate::tree::MAX_DIMS;

/// The largest header accepted, as in the reference implementation.
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

/// One tensor's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// Byte range in the file (the header's offsets plus the data start).
    pub range: Range<u64>,
}

/// A validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
    /// Offset of the first data byte: 8 + N.
    pub data_start: u64,
}

/// What is wrong with a header. Each names the tensor or the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than 8 bytes: not even a header length.
    #[error("{size} bytes is too short for a safetensors file (the header length alone takes 8)")]
    TooShort {
        /// The file's size.
        size: u64,
    },
    /// The header length is beyond the limit.
    #[error(
        "header length {len} exceeds the {MAX_HEADER_SIZE}-byte limit (not a safetensors file, or a corrupt one)"
    )]
    HeaderTooLarge {
        /// The length read.
        len: u64,
    },
    /// The header length runs past the end of the file.
    #[error("header length {len} runs past the end of the {size}-byte file (truncated?)")]
    HeaderPastEnd {
        /// The length read.
        len: u64,
        /// The file's size.
        size: u64,
    },
    /// The header is not a JSON object.
    #[error("header is not a JSON object: {0}")]
    NotJson(String),
    /// An entry lacks a field, or a field has the wrong type.
    #[error("tensor `{tensor}`: {reason}")]
    BadEntry {
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// The dtype and shape do not match the number of bytes.
    #[error(
        "tensor `{tensor}`: {dtype} × {shape:?} needs {expected} bytes but its offsets span {actual}"
    )]
    SizeMismatch {
        /// The tensor's name.
        tensor: String,
        /// Its dtype.
        dtype: DType,
        /// Its shape.
        shape: Vec<u64>,
        /// Bytes dtype × shape need (`None` on overflow or a partial byte).
        expected: String,
        /// Bytes its offsets span.
        actual: u64,
    },
    /// Tensors overlap, or leave a hole between them.
    #[error(
        "tensor `{tensor}` starts at data offset {begin}, expected {expected} (overlapping or holey offsets)"
    )]
    BadOffsets {
        /// The tensor's name.
        tensor: String,
        /// Its first offset.
        begin: u64,
        /// The previous tensor's end.
        expected: u64,
    },
    /// The data does not end exactly at the end of the file.
    #[error(
        "tensor data ends at byte {data_end} but the file has {size} bytes (truncated, or trailing garbage)"
    )]
    DataSizeMismatch {
        /// Where the last tensor ends, in the file.
        data_end: u64,
        /// The file's size.
        size: u64,
    },
    /// `__metadata__` is not a map of strings.
    #[error("__metadata__ must map strings to strings: {0}")]
    BadMetadata(String),
}

/// The number of leading bytes holding the whole header (8 + N), from the first 8 bytes of a
/// file of `size` bytes.
///
/// # Errors
///
/// [`HeaderError::TooShort`], [`HeaderError::HeaderTooLarge`] or
/// [`HeaderError::HeaderPastEnd`].
pub fn header_end(first: &[u8], size: u64) -> Result<u64, HeaderError> {
    let len_bytes: [u8; 8] = first
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::TooShort { size })?;
    let len = u64::from_le_bytes(len_bytes);
    if len > MAX_HEADER_SIZE {
        return Err(HeaderError::HeaderTooLarge { len });
    }
    let end = 8 + len;
    if end > size {
        return Err(HeaderError::HeaderPastEnd { len, size });
    }
    Ok(end)
}

/// Parses and validates the header at the start of `bytes` (at least [`header_end`] bytes of a
/// file of `size` bytes).
///
/// # Errors
///
/// A [`HeaderError`] naming what is wrong: bad length, not JSON, a malformed entry, an unknown
/// dtype, dtype × shape not matching the offsets, overlapping or holey offsets, or data not
/// ending at the end of the file.
pub fn parse(bytes: &[u8], size: u64) -> Result<Header, HeaderError> {
    let end = header_end(bytes, size)?;
    let json = bytes
        .get(8..end as usize)
        .ok_or(HeaderError::HeaderPastEnd { len: end - 8, size })?;
    if json.first() != Some(&b'{') {
        return Err(HeaderError::NotJson("does not start with `{`".into()));
    }
    let mut tensors = Vec::new();
    let metadata = entries::read(json, |name, raw| {
        tensors.push(entry(name, raw, end)?);
        Ok(())
    })
    .map_err(|stop| match stop {
        Stop::NotJson(message) => HeaderError::NotJson(message),
        Stop::Refused(e) => e,
    })?;
    let metadata = match metadata {
        Metadata::Ok(map) => map,
        Metadata::NotStrings(Some(key)) => {
            return Err(HeaderError::BadMetadata(format!("`{key}` is not a string")));
        }
        Metadata::NotStrings(None) => {
            return Err(HeaderError::BadMetadata("it is not a map".into()));
        }
        Metadata::TooMany => {
            return Err(HeaderError::BadMetadata(format!(
                "it has more than {MAX_METADATA_ENTRIES} entries"
            )));
        }
    };
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(HeaderError::BadEntry {
            tensor: pair[0].to_owned(),
            reason: "it appears twice in the header".into(),
        });
    }
    drop(names);
    tensors.sort_by_key(|t| (t.range.start, t.range.end));

    let mut expected = end;
    for t in &tensors {
        if t.range.start != expected {
            return Err(HeaderError::BadOffsets {
                tensor: t.name.clone(),
                begin: t.range.start - end,
                expected: expected - end,
            });
        }
        expected = t.range.end;
    }
    if expected != size {
        return Err(HeaderError::DataSizeMismatch {
            data_end: expected,
            size,
        });
    }
    Ok(Header {
        tensors,
        metadata,
        data_start: end,
    })
}

/// The bytes of a header for `tensors` (name, dtype, shape) laid out one after the other in
/// that order, and `metadata`; padded with spaces so the data starts 8-byte aligned.
///
/// # Errors
///
/// [`HeaderError::SizeMismatch`] for a tensor whose dtype × shape is not a whole number of
/// bytes (or overflows).
pub fn render(
    tensors: &[(&str, DType, &[u64])],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, HeaderError> {
    let mut offset = 0u64;
    let mut entries = Vec::with_capacity(tensors.len());
    for &(name, dtype, shape) in tensors {
        let len = dtype::numel(shape)
            .and_then(|n| dtype.byte_len(n))
            .ok_or_else(|| HeaderError::SizeMismatch {
                tensor: name.to_owned(),
                dtype,
                shape: shape.to_vec(),
                expected: "an impossible number of".into(),
                actual: 0,
            })?;
        let end = offset.saturating_add(len);
        entries.push((
            name,
            RenderedEntry {
                dtype: dtype.name(),
                shape,
                data_offsets: [offset, end],
            },
        ));
        offset = end;
    }
    let object = Rendered { metadata, entries };
    // Serialized in place: no JSON tree of the header is built.
    let mut header = serde_json::to_vec(&object).expect("a header always serializes");
    while !(8 + header.len()).is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    Ok(out)
}

/// The header object: `__metadata__` (when there is any), then the tensors in order.
struct Rendered<'a> {
    metadata: &'a BTreeMap<String, String>,
    entries: Vec<(&'a str, RenderedEntry<'a>)>,
}

#[derive(serde::Serialize)]
struct RenderedEntry<'a> {
    dtype: &'a str,
    shape: &'a [u64],
    data_offsets: [u64; 2],
}

impl serde::Serialize for Rendered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if !self.metadata.is_empty() {
            map.serialize_entry(METADATA_KEY, self.metadata)?;
        }
        for (name, entry) in &self.entries {
            map.serialize_entry(name, entry)?;
        }
        map.end()
    }
}

fn entry(name: String, raw: RawEntry, data_start: u64) -> Result<TensorInfo, HeaderError> {
    let bad = |reason: &str| HeaderError::BadEntry {
        tensor: name.clone(),
        reason: reason.to_owned(),
    };
    if raw.not_object {
        return Err(bad("entry is not an object"));
    }
    let Some(Field::Ok(dtype_name)) = raw.dtype else {
        return Err(bad("missing or non-string `dtype`"));
    };
    let dtype: DType = dtype_name
        .parse()
        .map_err(|e: dtype::UnknownDType| bad(&e.to_string()))?;
    let shape = match raw.shape {
        Some(Field::Ok(shape)) => shape,
        Some(Field::TooLong) => {
            return Err(bad(&format!("`shape` has more than {MAX_DIMS} dimensions")));
        }
        Some(Field::Wrong) => {
            return Err(bad(
                "`shape` holds something other than non-negative integers",
            ));
        }
        None => return Err(bad("missing or non-array `shape`")),
    };
    let (begin, end) = match raw.offsets {
        Some(Field::Ok(offsets)) => match offsets[..] {
            [begin, end] => (begin, end),
            _ => return Err(bad("`data_offsets` must hold two integers")),
        },
        Some(Field::TooLong) => return Err(bad("`data_offsets` must hold two integers")),
        Some(Field::Wrong) => {
            return Err(bad("`data_offsets` must hold two non-negative integers"));
        }
        None => return Err(bad("missing or non-array `data_offsets`")),
    };
    if begin > end {
        return Err(bad(&format!(
            "`data_offsets` [{begin}, {end}] run backwards"
        )));
    }
    let expected = dtype::numel(&shape).and_then(|n| dtype.byte_len(n));
    if expected != Some(end - begin) {
        return Err(HeaderError::SizeMismatch {
            tensor: name,
            dtype,
            shape,
            expected: expected.map_or_else(|| "an impossible number of".into(), |e| e.to_string()),
            actual: end - begin,
        });
    }
    let range = data_start
        .checked_add(begin)
        .zip(data_start.checked_add(end))
        .ok_or_else(|| bad("`data_offsets` overflow"))?;
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        range: range.0..range.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file: the header JSON, padded as writers do, then `data_len` bytes.
    fn file(json: &str, data_len: usize) -> Vec<u8> {
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend(std::iter::repeat_n(7u8, data_len));
        out
    }

    fn parse_file(bytes: &[u8]) -> Result<Header, HeaderError> {
        parse(bytes, bytes.len() as u64)
    }

    const GOOD: &str = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"BF16","shape":[],"data_offsets":[8,10]},"e":{"dtype":"I64","shape":[0,3],"data_offsets":[10,10]}}"#;

    #[test]
    fn a_valid_header_lists_tensors_in_file_order() {
        let bytes = file(GOOD, 10);
        let h = parse_file(&bytes).unwrap();
        let start = 8 + GOOD.len() as u64;
        assert_eq!(h.data_start, start);
        assert_eq!(h.metadata["format"], "pt");
        let names: Vec<_> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "e"]);
        assert_eq!(h.tensors[0].range, start..start + 8);
        assert_eq!(h.tensors[1].shape, Vec::<u64>::new());
        assert_eq!(
            h.tensors[2].range,
            start + 10..start + 10,
            "empty tensors are allowed"
        );
    }

    #[test]
    fn padding_after_the_json_is_allowed() {
        let padded = format!("{GOOD}    ");
        assert!(parse_file(&file(&padded, 10)).is_ok());
    }

    #[test]
    fn a_file_shorter_than_the_length_field_is_too_short() {
        assert_eq!(parse(&[1, 2, 3], 3), Err(HeaderError::TooShort { size: 3 }));
    }

    #[test]
    fn a_huge_header_length_is_refused_before_any_allocation() {
        let mut bytes = (1_000_000_000_000u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert_eq!(
            parse_file(&bytes),
            Err(HeaderError::HeaderTooLarge {
                len: 1_000_000_000_000
            })
        );
    }

    #[test]
    fn a_header_past_the_end_is_a_truncated_file() {
        let bytes = file(GOOD, 10);
        let cut = &bytes[..20];
        assert!(matches!(
            parse_file(cut),
            Err(HeaderError::HeaderPastEnd { .. })
        ));
    }

    #[test]
    fn a_header_that_is_not_json_is_refused() {
        assert!(matches!(
            parse_file(&file("[1, 2]", 0)),
            Err(HeaderError::NotJson(_))
        ));
        assert!(matches!(
            parse_file(&file("{\"a\": ", 0)),
            Err(HeaderError::NotJson(_))
        ));
        assert!(matches!(
            parse_file(&file(" {}", 0)),
            Err(HeaderError::NotJson(_))
        ));
        assert!(matches!(
            parse_file(&[2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]),
            Err(HeaderError::NotJson(_))
        ));
    }

    #[test]
    fn overlapping_offsets_name_the_tensor() {
        let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
        let err = parse_file(&file(json, 6)).unwrap_err();
        assert_eq!(
            err,
            HeaderError::BadOffsets {
                tensor: "b".into(),
                begin: 2,
                expected: 4
            }
        );
    }

    #[test]
    fn holey_offsets_name_the_tensor() {
        let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[5,7]}}"#;
        let err = parse_file(&file(json, 7)).unwrap_err();
        assert!(
            matches!(err, HeaderError::BadOffsets { ref tensor, begin: 5, expected: 4 } if tensor == "b"),
            "{err}"
        );
    }

    #[test]
    fn shape_times_dtype_must_equal_the_byte_length() {
        let json = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let err = parse_file(&file(json, 8)).unwrap_err();
        assert!(
            matches!(err, HeaderError::SizeMismatch { ref tensor, actual: 8, .. } if tensor == "w"),
            "{err}"
        );
        assert!(err.to_string().contains("needs 12 bytes"), "{err}");
        let overflow =
            r#"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
        assert!(matches!(
            parse_file(&file(overflow, 8)),
            Err(HeaderError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn data_must_end_exactly_at_the_end_of_the_file() {
        let bytes = file(GOOD, 11);
        assert!(matches!(
            parse_file(&bytes),
            Err(HeaderError::DataSizeMismatch { .. })
        ));
        let bytes = file(GOOD, 10);
        assert!(matches!(
            parse(&bytes, bytes.len() as u64 + 1),
            Err(HeaderError::DataSizeMismatch { .. })
        ));
    }

    #[test]
    fn malformed_entries_name_the_tensor_and_the_field() {
        let cases = [
            (r#"{"x":3}"#, "not an object"),
            (r#"{"x":{"shape":[1],"data_offsets":[0,1]}}"#, "dtype"),
            (
                r#"{"x":{"dtype":"F99","shape":[1],"data_offsets":[0,1]}}"#,
                "unknown dtype `F99`",
            ),
            (
                r#"{"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
                "shape",
            ),
            (
                r#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#,
                "two integers",
            ),
            (
                r#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}}"#,
                "backwards",
            ),
        ];
        for (json, expected) in cases {
            let err = parse_file(&file(json, 1)).unwrap_err();
            assert!(
                matches!(err, HeaderError::BadEntry { ref tensor, .. } if tensor == "x"),
                "{json}: {err}"
            );
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn rendered_headers_are_aligned_and_parse_back() {
        let meta = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let bytes = render(
            &[("a", DType::F32, &[2, 3]), ("b", DType::BF16, &[])],
            &meta,
        )
        .unwrap();
        assert_eq!(bytes.len() % 8, 0);
        let mut whole = bytes.clone();
        whole.extend(std::iter::repeat_n(0, 26));
        let header = parse_file(&whole).unwrap();
        assert_eq!(header.metadata, meta);
        let start = bytes.len() as u64;
        assert_eq!(header.tensors[1].range, start + 24..start + 26);
        assert!(
            render(&[("p", DType::F4, &[3])], &meta).is_err(),
            "half a byte"
        );
    }

    proptest::proptest! {
        /// Whatever tensors are rendered, the header parses back to the same names, dtypes,
        /// shapes and contiguous ranges, and the metadata survives.
        #[test]
        fn render_then_parse_round_trips(
            tensors in proptest::collection::vec(
                ("[a-z.]{1,12}", 0usize..4, proptest::collection::vec(0u64..5, 0..4)),
                0..8,
            ),
            meta in proptest::collection::btree_map("[a-z]{1,6}", "[ -~]{0,10}", 0..3),
        ) {
            let dtypes = [DType::U8, DType::F32, DType::BF16, DType::I64];
            let mut seen = std::collections::BTreeSet::new();
            let tensors: Vec<(String, DType, Vec<u64>)> = tensors
                .into_iter()
                .filter(|(name, _, _)| seen.insert(name.clone()) && name != METADATA_KEY)
                .map(|(name, d, shape)| (name, dtypes[d], shape))
                .collect();
            let refs: Vec<(&str, DType, &[u64])> = tensors
                .iter()
                .map(|(n, d, s)| (n.as_str(), *d, s.as_slice()))
                .collect();
            let mut bytes = render(&refs, &meta).unwrap();
            let data: u64 = tensors
                .iter()
                .map(|(_, d, s)| d.byte_len(dtype::numel(s).unwrap()).unwrap())
                .sum();
            bytes.extend(std::iter::repeat_n(0, data as usize));
            let header = parse_file(&bytes).unwrap();
            proptest::prop_assert_eq!(&header.metadata, &meta);
            let mut got: Vec<(String, DType, Vec<u64>)> = header
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
                .collect();
            let mut want = tensors.clone();
            // Tensors come back in file order; empty ones share an offset, so compare as sets.
            got.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn metadata_must_be_strings() {
        let json = r#"{"__metadata__":{"epoch":3}}"#;
        assert!(matches!(
            parse_file(&file(json, 0)),
            Err(HeaderError::BadMetadata(_))
        ));
    }

    #[test]
    fn a_tensor_named_twice_is_refused() {
        let json = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        let err = parse_file(&file(json, 2)).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn millions_of_dimensions_are_refused_in_constant_memory() {
        let dims = vec!["0"; 5_000_000].join(",");
        let json = format!(r#"{{"a":{{"dtype":"U8","shape":[{dims}],"data_offsets":[0,0]}}}}"#);
        let bytes = file(&json, 0);
        let (result, most) = crate::testing::alloc::peak(|| parse_file(&bytes));
        let err = result.unwrap_err();
        assert!(err.to_string().contains("more than 64 dimensions"), "{err}");
        assert!(most < 1 << 20, "{most} bytes");
    }

    #[test]
    fn a_million_tensors_cost_a_bounded_multiple_of_their_header() {
        let entries: Vec<String> = (0..1_000_000)
            .map(|i| {
                format!(
                    r#""t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{}]}}"#,
                    i + 1
                )
            })
            .collect();
        let bytes = file(&format!("{{{}}}", entries.join(",")), 1_000_000);
        let header_len = bytes.len() - 1_000_000;
        let (header, most) = crate::testing::alloc::peak(|| parse_file(&bytes).unwrap());
        assert_eq!(header.tensors.len(), 1_000_000);
        assert!(
            most < 3 * header_len,
            "{most} bytes for a {header_len}-byte header"
        );
    }
}
