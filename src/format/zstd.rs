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
    // When every frame records its size and the total fits, zstd decodes straight into a
    // buffer of exactly that size: no window copy, no zero-filled spare capacity.
    if let Some(total) = zstd::bulk::Decompressor::upper_bound(data).filter(|&n| n as u64 <= limit)
    {
        return zstd::bulk::decompress(data, total)
            .map(Bytes::from)
            .map_err(|e| format!("a zstd stream that does not decompress: {e}"));
    }
    let decoder =
        zstd::stream::read::Decoder::new(data).map_err(|e| format!("not a zstd stream: {e}"))?;
    let mut out = Vec::new();
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

    #[test]
    fn frames_with_and_without_a_recorded_size_decompress_alike() {
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sized = zstd::encode_all(&plain[..], 1).unwrap();
        let mut unsized_ = Vec::new();
        {
            let mut w = zstd::stream::write::Encoder::new(&mut unsized_, 1).unwrap();
            w.include_contentsize(false).unwrap();
            std::io::Write::write_all(&mut w, &plain).unwrap();
            w.finish().unwrap();
        }
        let two_frames = [sized.clone(), sized.clone()].concat();
        assert_eq!(decompress(&sized, 300_000).unwrap(), plain);
        assert_eq!(decompress(&unsized_, 300_000).unwrap(), plain);
        assert_eq!(
            decompress(&two_frames, 600_000).unwrap(),
            [&plain[..], &plain[..]].concat()
        );
        let err = decompress(&unsized_, 299_999).unwrap_err();
        assert!(err.contains("more than 299999"), "{err}");
        let err = decompress(&two_frames, 599_999).unwrap_err();
        assert!(err.contains("more than 599999"), "{err}");
    }
}
