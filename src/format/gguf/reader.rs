//! A GGUF file, opened lazily: its header is read from the prefix the probe already has (and a
//! few more ranged reads for a header longer than that, each at least doubling what is held),
//! and each tensor becomes a range of the pinned object.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::ggml::{self, Kind};
use super::header::{GgufError, Header, TensorInfo, parse};
use crate::error::{Error, Result};
use crate::fetch::Object;
use crate::format::object::TooLargeFile;
use crate::format::object::source;
use crate::tree::{
    ByteRange, LazyTensor, Node, Quantized, Source, StateTree, TensorData, Unreadable, View,
};

/// The longest header read: llama.cpp's largest vocabularies take tens of MiB.
pub const MAX_HEADER: u64 = 512 << 20;

/// The GGUF file `object`, whose first bytes `first` were read already, as its metadata and a
/// tree with one top-level key per tensor.
///
/// # Errors
///
/// [`Error::Unsupported`] for GGUF v1; [`Error::Corrupt`] naming what is wrong with the header;
/// the reads' errors.
pub(crate) async fn open(
    object: Object,
    first: Bytes,
) -> Result<(BTreeMap<String, String>, StateTree)> {
    let uri = object.location().uri();
    let size = object.info().size;
    let mut have = first;
    let header = loop {
        match parse(&have, size) {
            Ok(header) => break header,
            Err(GgufError::Incomplete { needed }) => {
                if needed > MAX_HEADER {
                    return Err(Error::corrupt(
                        uri,
                        TooLargeFile {
                            what: "GGUF header",
                            size: needed,
                            limit: MAX_HEADER,
                        },
                    ));
                }
                let end = needed.max(2 * have.len() as u64).min(size).min(MAX_HEADER);
                have = object.extend_prefix(have, end).await?;
            }
            Err(GgufError::Version(v)) => {
                return Err(Error::Unsupported {
                    uri,
                    what: format!("GGUF version {v} (ckptio reads versions 2 and 3)"),
                });
            }
            Err(e) => return Err(Error::corrupt(uri, e)),
        }
    };
    Ok(into_tree(&header, &source(&object), &uri))
}

/// The header's metadata (every key's value as text, and `gguf.version`) and its tensors.
fn into_tree(
    header: &Header,
    source: &Arc<dyn Source>,
    uri: &str,
) -> (BTreeMap<String, String>, StateTree) {
    let mut metadata: BTreeMap<String, String> = header
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.to_text()))
        .collect();
    metadata.insert("gguf.version".into(), header.version.to_string());
    let origin: Arc<str> = Arc::from(uri);
    let root = header
        .tensors
        .iter()
        .map(|t| (t.name.clone(), Node::from(lazy(header, t, source, &origin))))
        .collect();
    (metadata, StateTree::from_dict(root))
}

/// One tensor: plain elements as their dtype, blocks as `U8` rows of blocks marked
/// [`Quantized`], an unknown type as unreadable.
fn lazy(
    header: &Header,
    t: &TensorInfo,
    source: &Arc<dyn Source>,
    origin: &Arc<str>,
) -> LazyTensor {
    let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
    let unreadable = |what: String| LazyTensor {
        dtype: crate::dtype::DType::U8,
        shape: shape.clone(),
        strides: Vec::new(),
        data: TensorData::Unreadable(Unreadable {
            what: what.into(),
            origin: Arc::clone(origin),
        }),
        view: View::default(),
        quantized: None,
    };
    let (Some(ggml), Some(nbytes)) = (ggml::by_id(t.ggml_type), t.nbytes) else {
        return unreadable(format!(
            "of ggml type {}, which ckptio does not know",
            t.ggml_type
        ));
    };
    let start = header.data_start + t.offset;
    let data = TensorData::Range(ByteRange {
        big_endian: header.big_endian,
        ..ByteRange::new(Arc::clone(source), start..start + nbytes)
    });
    let row = t.dims.first().copied().unwrap_or(1);
    match ggml.kind {
        Kind::Plain(dtype) => LazyTensor {
            dtype,
            shape,
            strides: Vec::new(),
            data,
            view: View::default(),
            quantized: None,
        },
        Kind::Decoded(_) | Kind::Raw if header.big_endian => {
            unreadable(format!("{} blocks in a big-endian file", ggml.name))
        }
        Kind::Decoded(_) | Kind::Raw => {
            let mut raw = shape;
            if let Some(last) = raw.last_mut() {
                *last = ggml.row_bytes(row).expect("checked by the parser");
            } else {
                raw.push(nbytes);
            }
            LazyTensor {
                dtype: crate::dtype::DType::U8,
                shape: raw,
                strides: Vec::new(),
                data,
                view: View::default(),
                quantized: Some(Quantized {
                    scheme: ggml,
                    row,
                    decoded: false,
                }),
            }
        }
    }
}
