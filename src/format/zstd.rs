//! Zstandard streams as the formats store them (DCP items, Orbax's zarr chunks and OCDBT
//! nodes), decompressed within a limit the reader knows. Pure.

use std::io::Read;

use bytes::Bytes;

/// Decompresses a zstd stream (every frame of it), refusing one that grows past `limit`: a
/// frame that claims or produces more is an error after at most `limit + 1` bytes.
///
/// # Errors
///
/// A sentence saying what is wrong: not zstd, broken, or too large.
pub(crate) fn decompress(data: &[u8], limit: u64) -> Result<Bytes, String> {
    let decoder =
        zstd::stream::read::Decoder::new(data).map_err(|e| format!("not a zstd stream: {e}"))?;
    // The first frame's declared size, when it has one within the limit, sizes the buffer
    // once; the limit still bounds what is read.
    let declared = zstd::zstd_safe::get_frame_content_size(data)
        .ok()
        .flatten()
        .filter(|&n| n <= limit)
        .unwrap_or(0);
    let mut out = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    decoder
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("a zstd stream that does not decompress: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!(
            "a zstd stream that decompresses to more than {limit} bytes"
        ));
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zstd_stream_decompresses_within_its_limit_only() {
        let plain = vec![7u8; 100_000];
        let packed = zstd::encode_all(&plain[..], 3).unwrap();
        assert_eq!(decompress(&packed, 100_000).unwrap().len(), 100_000);
        let err = decompress(&packed, 99_999).unwrap_err();
        assert!(err.contains("more than 99999"), "{err}");
        assert!(decompress(b"not zstd", 10).is_err());
    }
}
