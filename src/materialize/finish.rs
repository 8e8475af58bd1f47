//! Stored bytes made a tensor: the layout checked against its range, elements gathered
//! contiguous and little-endian, views applied, widened or dequantized when asked.

use bytes::Bytes;

use super::{MaterializeOptions, layout, to_f32};
use crate::dtype::DType;
use crate::error::{Error, Result, TensorError};
use crate::tree::{LazyTensor, Quantized, Tensor};

pub(super) fn too_large(uri: &str, size: u64) -> Error {
    Error::TooLarge {
        uri: uri.to_owned(),
        size,
        streamable: false,
    }
}

/// `t`'s contiguous little-endian bytes as a tensor, widened to F32 (or dequantized) when
/// asked and possible.
pub(super) fn widened(
    uri: &str,
    path: &str,
    t: &LazyTensor,
    data: Bytes,
    options: MaterializeOptions,
) -> Result<Tensor> {
    let (dtype, shape) = (t.dtype, t.shape.clone());
    if !options.to_f32 {
        return Ok(Tensor { dtype, shape, data });
    }
    if let Some(q) = t.quantized {
        return Ok(Tensor {
            dtype: DType::F32,
            shape: q.values_shape(&shape),
            data: dequantize(uri, path, q, &data)?,
        });
    }
    let wide = (dtype != DType::F32)
        .then(|| to_f32(dtype, &data))
        .flatten();
    Ok(match wide {
        Some(wide) => Tensor {
            dtype: DType::F32,
            shape,
            data: wide.into(),
        },
        None => Tensor { dtype, shape, data },
    })
}

/// The F32 values of `blocks`, little-endian.
fn dequantize(uri: &str, path: &str, q: Quantized, blocks: &[u8]) -> Result<Bytes> {
    let values = q
        .scheme
        .dequantize(blocks)
        .map_err(|why| Error::Unsupported {
            uri: uri.to_owned(),
            what: format!("tensor `{path}` is {} blocks: {why}", q.scheme.name()),
        })?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Whether `stored` bytes hold `t`'s layout: exactly its bytes when it is contiguous, at least
/// what its strides reach when it is not.
pub(super) fn fits(t: &LazyTensor, stored: u64) -> std::result::Result<(), String> {
    let nbytes = t
        .dtype
        .byte_len(t.numel())
        .ok_or_else(|| format!("{} × {:?} is not a whole number of bytes", t.dtype, t.shape))?;
    if t.is_contiguous() {
        if stored != nbytes {
            return Err(format!(
                "{} × {:?} needs {nbytes} bytes, its range holds {stored}",
                t.dtype, t.shape
            ));
        }
        return Ok(());
    }
    let extent = crate::tree::strided_extent(t.dtype, &t.shape, &t.strides).ok_or_else(|| {
        format!(
            "a strided layout {:?} for {} × {:?} is not supported",
            t.strides, t.dtype, t.shape
        )
    })?;
    if stored < extent {
        return Err(format!(
            "strides {:?} reach byte {extent}, its range holds {stored}",
            t.strides
        ));
    }
    Ok(())
}

/// Stored bytes → a contiguous little-endian tensor (widened if asked).
pub(super) fn finish(
    uri: &str,
    path: String,
    t: &LazyTensor,
    stored: Bytes,
    big_endian: bool,
    options: MaterializeOptions,
) -> Result<(String, Tensor)> {
    let bad = |reason: String| {
        Error::corrupt(
            uri,
            TensorError {
                path: path.clone(),
                reason,
            },
        )
    };
    if let Some(q) = t.quantized.filter(|q| q.decoded) {
        let blocks = q.stored_bytes(t.numel());
        if blocks != Some(stored.len() as u64) {
            return Err(bad(format!(
                "{} × {:?} in {} blocks needs {blocks:?} bytes, its range holds {}",
                t.dtype,
                t.shape,
                q.scheme.name(),
                stored.len()
            )));
        }
        let values = dequantize(uri, &path, q, &stored)?;
        return Ok((
            path,
            Tensor {
                dtype: DType::F32,
                shape: t.shape.clone(),
                data: values,
            },
        ));
    }
    let nbytes = t.dtype.byte_len(t.numel()).ok_or_else(|| {
        bad(format!(
            "{} × {:?} is not a whole number of bytes",
            t.dtype, t.shape
        ))
    })?;
    let elem = (t.dtype.bits() / 8) as usize;
    fits(t, stored.len() as u64).map_err(bad)?;
    let mut data = if t.is_contiguous() {
        stored
    } else {
        layout::gather(&stored, elem, &t.shape, &t.strides)
            .ok_or_else(|| too_large(uri, nbytes))?
            .into()
    };
    if (big_endian && elem > 1) || !t.view.is_identity() {
        let mut owned = data.to_vec();
        if big_endian {
            layout::swap_bytes(&mut owned, elem);
        }
        layout::apply_view(&mut owned, t.dtype, t.view).ok_or_else(|| Error::Unsupported {
            uri: uri.to_owned(),
            what: format!(
                "tensor `{path}` is a {} view of {} elements, which ckptio cannot apply",
                if t.view.neg { "negative" } else { "conjugate" },
                t.dtype
            ),
        })?;
        data = owned.into();
    }
    let tensor = widened(uri, &path, t, data, options)?;
    Ok((path, tensor))
}
