//! Widening low-precision floats to F32 for consumers that want plain floats. Pure.

use half::{bf16, f16};

use crate::dtype::DType;

/// Whether [`to_f32`] can widen `dtype`.
pub fn widens(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F32 | DType::F16 | DType::BF16 | DType::F8_E4M3 | DType::F8_E5M2 | DType::F8_E8M0
    )
}

/// Little-endian F32 bytes for little-endian elements of `dtype`, or `None` when the dtype is
/// not a float ckptio widens.
pub fn to_f32(dtype: DType, data: &[u8]) -> Option<Vec<u8>> {
    let widen: fn(&[u8]) -> f32 = match dtype {
        DType::F32 => return Some(data.to_vec()),
        DType::F16 => |b| f16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::BF16 => |b| bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::F8_E4M3 => |b| f8_e4m3(b[0]),
        // E5M2 is the upper byte of an IEEE half.
        DType::F8_E5M2 => |b| f16::from_bits(u16::from(b[0]) << 8).to_f32(),
        DType::F8_E8M0 => |b| f8_e8m0(b[0]),
        _ => return None,
    };
    let width = (dtype.bits() / 8) as usize;
    Some(
        data.chunks_exact(width)
            .flat_map(|b| widen(b).to_le_bytes())
            .collect(),
    )
}

/// OCP FP8 E4M3 ("FN"): 4 exponent bits (bias 7), 3 mantissa bits, no infinities; only
/// `S.1111.111` is NaN.
fn f8_e4m3(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((byte >> 3) & 0x0F);
    let mantissa = f32::from(byte & 0x07);
    if exp == 0x0F && byte & 0x07 == 0x07 {
        return f32::NAN;
    }
    let magnitude = if exp == 0 {
        mantissa / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + mantissa / 8.0) * 2f32.powi(exp - 7)
    };
    sign * magnitude
}

/// OCP E8M0 scale: an exponent alone, 2^(e − 127); `0xFF` is NaN.
fn f8_e8m0(byte: u8) -> f32 {
    if byte == 0xFF {
        f32::NAN
    } else {
        2f32.powi(i32::from(byte) - 127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widen(dtype: DType, bytes: &[u8]) -> Vec<f32> {
        to_f32(dtype, bytes)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn halves_widen_exactly() {
        let bytes: Vec<u8> = [1.5f32, -2.0, 0.0]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(widen(DType::F16, &bytes), [1.5, -2.0, 0.0]);
        let bytes: Vec<u8> = [3.0f32, -0.5]
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(widen(DType::BF16, &bytes), [3.0, -0.5]);
    }

    #[test]
    fn fp8_formats_decode_per_the_ocp_spec() {
        // E4M3: 0x38 = 1.0, 0x7E = 448 (max), 0x01 = 2^-9 (min subnormal), 0xB8 = -1.0.
        assert_eq!(
            widen(DType::F8_E4M3, &[0x38, 0x7E, 0x01, 0xB8]),
            [1.0, 448.0, 2f32.powi(-9), -1.0]
        );
        assert!(widen(DType::F8_E4M3, &[0x7F])[0].is_nan());
        // E5M2: 0x3C = 1.0, 0x7B = 57344 (max), 0x7C = inf.
        assert_eq!(
            widen(DType::F8_E5M2, &[0x3C, 0x7B, 0x7C]),
            [1.0, 57344.0, f32::INFINITY]
        );
        // E8M0: 127 = 1.0, 130 = 8.0.
        assert_eq!(widen(DType::F8_E8M0, &[127, 130]), [1.0, 8.0]);
        assert!(widen(DType::F8_E8M0, &[0xFF])[0].is_nan());
    }

    #[test]
    fn integers_and_packed_types_do_not_widen() {
        assert!(to_f32(DType::I32, &[0; 4]).is_none());
        assert!(to_f32(DType::F4, &[0]).is_none());
        assert!(!widens(DType::U8) && widens(DType::BF16));
    }
}
