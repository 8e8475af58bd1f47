//! Dequantizing ggml's blocks to F32, as ggml's reference `dequantize_row_*` and the `gguf`
//! package's `dequantize` compute them: the same products in the same order, so the values are
//! bit-identical. Each function takes whole blocks and fills one value slot per encoded value.
//! Pure.

use half::f16;

/// Values in one super-block of the `_K` schemes.
const QK_K: usize = 256;

fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Runs `block` over each `bytes`-byte block of `data` and its `values`-value slot of `out`.
fn each(
    data: &[u8],
    out: &mut [f32],
    bytes: usize,
    values: usize,
    block: impl Fn(&[u8], &mut [f32]),
) {
    for (b, y) in data.chunks_exact(bytes).zip(out.chunks_exact_mut(values)) {
        block(b, y);
    }
}

/// The 4-bit quant `j` (0..32) of a 32-value block's 16 packed bytes: low nibbles first.
fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0x0F
    } else {
        qs[j - 16] >> 4
    }
}

/// `Q4_0`: a scale and 32 four-bit quants, centred on 8.
pub(crate) fn q4_0(data: &[u8], out: &mut [f32]) {
    each(data, out, 18, 32, |b, y| {
        let d = half(b, 0);
        for (j, y) in y.iter_mut().enumerate() {
            *y = d * f32::from(nibble(&b[2..], j) as i8 - 8);
        }
    });
}

/// `Q4_1`: a scale, a minimum and 32 four-bit quants.
pub(crate) fn q4_1(data: &[u8], out: &mut [f32]) {
    each(data, out, 20, 32, |b, y| {
        let (d, m) = (half(b, 0), half(b, 2));
        for (j, y) in y.iter_mut().enumerate() {
            *y = d * f32::from(nibble(&b[4..], j)) + m;
        }
    });
}

/// The fifth bit of quant `j` from a block's 32-bit mask.
fn fifth(qh: &[u8], j: usize) -> u8 {
    let mask = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    ((mask >> j) & 1) as u8
}

/// `Q5_0`: a scale and 32 five-bit quants (a nibble and a bit of a mask), centred on 16.
pub(crate) fn q5_0(data: &[u8], out: &mut [f32]) {
    each(data, out, 22, 32, |b, y| {
        let d = half(b, 0);
        for (j, y) in y.iter_mut().enumerate() {
            let q = nibble(&b[6..], j) | fifth(&b[2..6], j) << 4;
            *y = d * f32::from(q as i8 - 16);
        }
    });
}

/// `Q5_1`: a scale, a minimum and 32 five-bit quants.
pub(crate) fn q5_1(data: &[u8], out: &mut [f32]) {
    each(data, out, 24, 32, |b, y| {
        let (d, m) = (half(b, 0), half(b, 2));
        for (j, y) in y.iter_mut().enumerate() {
            let q = nibble(&b[8..], j) | fifth(&b[4..8], j) << 4;
            *y = d * f32::from(q) + m;
        }
    });
}

/// `Q8_0`: a scale and 32 signed bytes.
pub(crate) fn q8_0(data: &[u8], out: &mut [f32]) {
    each(data, out, 34, 32, |b, y| {
        let d = half(b, 0);
        for (y, &q) in y.iter_mut().zip(&b[2..]) {
            *y = f32::from(q as i8) * d;
        }
    });
}

/// The 2-bit quant of value `v` (0..256) of a super-block's 64 bytes: each 32 bytes hold
/// 128 values, four shifts apart.
fn crumb(qs: &[u8], v: usize) -> u8 {
    let (half, within) = (v / 128, v % 128);
    (qs[half * 32 + within % 32] >> (2 * (within / 32))) & 3
}

/// `Q2_K`: 16 groups of 16 two-bit quants, each group with a 4-bit scale and minimum.
pub(crate) fn q2_k(data: &[u8], out: &mut [f32]) {
    each(data, out, 84, QK_K, |b, y| {
        let (scales, qs) = (&b[..16], &b[16..80]);
        let (d, dmin) = (half(b, 80), half(b, 82));
        for (v, y) in y.iter_mut().enumerate() {
            let s = scales[v / 16];
            let dl = d * f32::from(s & 0x0F);
            let ml = dmin * f32::from(s >> 4);
            *y = dl * f32::from(crumb(qs, v)) - ml;
        }
    });
}

/// `Q3_K`: 16 groups of 16 three-bit quants (two bits and a high-mask bit, set meaning no
/// offset), each group with a signed 6-bit scale.
pub(crate) fn q3_k(data: &[u8], out: &mut [f32]) {
    each(data, out, 110, QK_K, |b, y| {
        let (hmask, qs, packed) = (&b[..32], &b[32..96], &b[96..108]);
        let d = half(b, 108);
        let scale = |g: usize| {
            let low = if g < 8 {
                packed[g] & 0x0F
            } else {
                packed[g - 8] >> 4
            };
            let high = (packed[8 + g % 4] >> (2 * (g / 4))) & 3;
            f32::from((low | high << 4) as i8 - 32)
        };
        for (v, y) in y.iter_mut().enumerate() {
            let dl = d * scale(v / 16);
            let high = (hmask[v % 32] >> (v / 32)) & 1;
            let q = crumb(qs, v) as i8 - (((high ^ 1) << 2) as i8);
            *y = dl * f32::from(q);
        }
    });
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of the `Q4_K`/`Q5_K` 12-byte packing.
fn scale_min(packed: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 0x3F, packed[j + 4] & 0x3F)
    } else {
        let (d, m, md) = (packed[j - 4], packed[j], packed[j + 4]);
        (
            (md & 0x0F) | ((d >> 2) & 0x30),
            (md >> 4) | ((m >> 2) & 0x30),
        )
    }
}

/// The 4-bit quant of value `v` (0..256) of a `_K` super-block's 128 bytes: each 32 bytes
/// hold two sub-blocks of 32, low nibbles first.
fn k_nibble(qs: &[u8], v: usize) -> u8 {
    let (sub, l) = (v / 32, v % 32);
    (qs[(sub / 2) * 32 + l] >> (4 * (sub % 2))) & 0x0F
}

/// `Q4_K`: 8 sub-blocks of 32 four-bit quants, each with a 6-bit scale and minimum.
pub(crate) fn q4_k(data: &[u8], out: &mut [f32]) {
    each(data, out, 144, QK_K, |b, y| {
        let (d, dmin) = (half(b, 0), half(b, 2));
        let (packed, qs) = (&b[4..16], &b[16..144]);
        for (v, y) in y.iter_mut().enumerate() {
            let (sc, m) = scale_min(packed, v / 32);
            *y = d * f32::from(sc) * f32::from(k_nibble(qs, v)) - dmin * f32::from(m);
        }
    });
}

/// `Q5_K`: as `Q4_K`, with a fifth bit per quant from a 32-byte mask.
pub(crate) fn q5_k(data: &[u8], out: &mut [f32]) {
    each(data, out, 176, QK_K, |b, y| {
        let (d, dmin) = (half(b, 0), half(b, 2));
        let (packed, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for (v, y) in y.iter_mut().enumerate() {
            let (sc, m) = scale_min(packed, v / 32);
            let q = k_nibble(qs, v) | ((qh[v % 32] >> (v / 32)) & 1) << 4;
            *y = d * f32::from(sc) * f32::from(q) - dmin * f32::from(m);
        }
    });
}

/// `Q6_K`: 16 groups of 16 six-bit quants (a nibble and two high bits), centred on 32, each
/// group with a signed 8-bit scale.
pub(crate) fn q6_k(data: &[u8], out: &mut [f32]) {
    each(data, out, 210, QK_K, |b, y| {
        let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
        let d = half(b, 208);
        for (v, y) in y.iter_mut().enumerate() {
            let (half, r, l) = (v / 128, (v % 128) / 32, v % 32);
            let low = (ql[half * 64 + (r % 2) * 32 + l] >> (4 * (r / 2))) & 0x0F;
            let high = (qh[half * 32 + l] >> (2 * r)) & 3;
            let q = (low | high << 4) as i8 - 32;
            *y = d * f32::from(scales[v / 16] as i8) * f32::from(q);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_scales_signed_bytes() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = [0.0; 32];
        q8_0(&block, &mut out);
        assert_eq!(out[0], -8.0);
        assert_eq!(out[31], 7.5);
    }

    #[test]
    fn q4_0_reads_low_nibbles_then_high() {
        let mut block = f16_bytes(2.0).to_vec();
        block.extend([0x9F; 16]); // low nibble 15, high nibble 9
        let mut out = [0.0; 32];
        q4_0(&block, &mut out);
        assert_eq!(out[..16], [14.0; 16]);
        assert_eq!(out[16..], [2.0; 16]);
    }

    #[test]
    fn q5_1_takes_the_fifth_bit_from_the_mask() {
        let mut block = f16_bytes(1.0).to_vec();
        block.extend(f16_bytes(-1.0));
        block.extend(1u32.to_le_bytes()); // only quant 0 has its fifth bit
        block.extend([0x00; 16]);
        let mut out = [0.0; 32];
        q5_1(&block, &mut out);
        assert_eq!(out[0], 15.0);
        assert_eq!(out[1..], [-1.0; 31]);
    }

    #[test]
    fn k_scales_unpack_six_bits() {
        // Sub-block 5: scale from the low nibble of byte 9 and the top bits of byte 1; its
        // minimum from the high nibble of byte 9 and the top bits of byte 5.
        let mut packed = [0u8; 12];
        packed[1] = 0b1100_0000;
        packed[5] = 0b0100_0000;
        packed[9] = 0x3A;
        assert_eq!(scale_min(&packed, 5), (0x3A & 0x0F | 0x30, 0x3 | 0x10));
        assert_eq!(scale_min(&packed, 1), (0, 0));
    }
}
