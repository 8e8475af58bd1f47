//! Turning stored elements into a contiguous, little-endian, row-major buffer. Pure.

use crate::dtype::DType;
use crate::tree::View;

/// The elements of a strided tensor, gathered into row-major order. `data` starts at the first
/// element; the caller has checked it spans [`strided_extent`](crate::tree::strided_extent) bytes. `None` when the output
/// cannot be allocated (a zero stride can make a huge tensor of a few stored bytes).
pub(crate) fn gather(data: &[u8], elem: usize, shape: &[u64], strides: &[u64]) -> Option<Vec<u8>> {
    let numel = crate::dtype::numel(shape)?;
    let len = usize::try_from(numel).ok()?.checked_mul(elem)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).ok()?;
    if numel == 0 {
        return Some(out);
    }
    let mut index = vec![0u64; shape.len()];
    loop {
        let at = index.iter().zip(strides).map(|(&i, &s)| i * s).sum::<u64>() as usize * elem;
        out.extend_from_slice(&data[at..at + elem]);
        // Advance the row-major index; done when it wraps around.
        let mut dim = shape.len();
        loop {
            if dim == 0 {
                return Some(out);
            }
            dim -= 1;
            index[dim] += 1;
            if index[dim] < shape[dim] {
                break;
            }
            index[dim] = 0;
        }
    }
}

/// Copies a box of a tensor (`part`: row-major, `sizes` elements, starting at `offsets` of the
/// full tensor) into `out`, the row-major bytes of rows `row0..row0 + shape[0]` of the full
/// tensor (`shape` is the window's shape). Rows outside the window are skipped. Returns the
/// number of elements placed; `None` when the box does not fit.
pub(crate) fn place(
    out: &mut [u8],
    shape: &[u64],
    row0: u64,
    part: &[u8],
    offsets: &[u64],
    sizes: &[u64],
    elem: usize,
) -> Option<u64> {
    let n = shape.len();
    if offsets.len() != n || sizes.len() != n {
        return None;
    }
    if n == 0 {
        out.get_mut(..elem)?.copy_from_slice(part.get(..elem)?);
        return Some(1);
    }
    let lo = offsets[0].max(row0);
    let hi = (offsets[0].checked_add(sizes[0])?).min(row0.checked_add(shape[0])?);
    if lo >= hi || sizes.contains(&0) {
        return Some(0);
    }
    for d in 1..n {
        if offsets[d].checked_add(sizes[d])? > shape[d] {
            return None;
        }
    }
    let out_strides = crate::tree::contiguous_strides(shape);
    let part_strides = crate::tree::contiguous_strides(sizes);
    // Copy runs along the last dimension; iterate over the others.
    let run = if n == 1 { hi - lo } else { sizes[n - 1] };
    let run_bytes = usize::try_from(run).ok()?.checked_mul(elem)?;
    let outer: Vec<u64> = (0..n - 1)
        .map(|d| if d == 0 { hi - lo } else { sizes[d] })
        .collect();
    let mut index = vec![0u64; outer.len()];
    let mut placed = 0u64;
    loop {
        let (mut src, mut dst) = (0u64, 0u64);
        for d in 0..n {
            let local = if d == n - 1 && n > 1 {
                0
            } else if d == 0 {
                // In 1-d the run itself starts at the window's first row.
                lo - offsets[0] + index.first().copied().unwrap_or(0)
            } else {
                index[d]
            };
            let global = offsets[d] + local;
            let window = if d == 0 { global - row0 } else { global };
            src = src.checked_add(local.checked_mul(part_strides[d])?)?;
            dst = dst.checked_add(window.checked_mul(out_strides[d])?)?;
        }
        let src = usize::try_from(src).ok()?.checked_mul(elem)?;
        let dst = usize::try_from(dst).ok()?.checked_mul(elem)?;
        out.get_mut(dst..dst.checked_add(run_bytes)?)?
            .copy_from_slice(part.get(src..src.checked_add(run_bytes)?)?);
        placed += run;
        // The next index over the outer dimensions (there are none in 1-d).
        let mut d = outer.len();
        loop {
            if d == 0 {
                return Some(placed);
            }
            d -= 1;
            index[d] += 1;
            if index[d] < outer[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Applies a negative or conjugate view to contiguous little-endian elements of `dtype`:
/// negation flips the sign bit of a float (and of both parts of a complex) and negates an
/// integer; conjugation flips the imaginary part's sign. `None` for a type without a sign
/// (BOOL, E8M0 scales, packed types).
pub(crate) fn apply_view(data: &mut [u8], dtype: DType, view: View) -> Option<()> {
    use DType as D;
    if view.is_identity() {
        return Some(());
    }
    let (part, complex) = match dtype {
        D::C64 => (4, true),
        D::C128 => (8, true),
        D::C32 => (2, true),
        D::F16 | D::BF16 => (2, false),
        D::F32 => (4, false),
        D::F64 => (8, false),
        D::F8_E4M3 | D::F8_E5M2 | D::F8_E4M3FNUZ | D::F8_E5M2FNUZ => (1, false),
        D::I8 | D::I16 | D::I32 | D::I64 if !view.conj => {
            let width = (dtype.bits() / 8) as usize;
            for element in data.chunks_exact_mut(width) {
                negate_integer(element);
            }
            return Some(());
        }
        _ if !view.neg && !dtype.is_complex() => return Some(()),
        _ => return None,
    };
    // The sign bit of a little-endian float is the top bit of its last byte.
    let flip = |part_bytes: &mut [u8]| part_bytes[part - 1] ^= 0x80;
    if complex {
        let (real, imag) = (view.neg, view.neg != view.conj);
        for element in data.chunks_exact_mut(2 * part) {
            let (re, im) = element.split_at_mut(part);
            if real {
                flip(re);
            }
            if imag {
                flip(im);
            }
        }
    } else if view.neg {
        data.chunks_exact_mut(part).for_each(flip);
    }
    Some(())
}

/// Two's complement negation of one little-endian integer, wrapping as torch does.
fn negate_integer(element: &mut [u8]) {
    let mut carry = true;
    for byte in element {
        let (v, c) = (!*byte).overflowing_add(u8::from(carry));
        *byte = v;
        carry = c;
    }
}

/// Reverses the bytes of every `elem`-byte element (big-endian storage to little-endian).
pub(crate) fn swap_bytes(data: &mut [u8], elem: usize) {
    if elem > 1 {
        data.chunks_exact_mut(elem).for_each(<[u8]>::reverse);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_negate_and_conjugate_as_torch_does() {
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let neg = View {
            neg: true,
            conj: false,
        };
        let conj = View {
            neg: false,
            conj: true,
        };
        let both = View {
            neg: true,
            conj: true,
        };
        let mut real = f32s(&[1.5, -2.0, 0.0]);
        apply_view(&mut real, DType::F32, neg).unwrap();
        assert_eq!(real, f32s(&[-1.5, 2.0, -0.0]));
        // complex64 [1+2j, 3-4j]
        for (view, want) in [
            (conj, [1.0, -2.0, 3.0, 4.0]),
            (neg, [-1.0, -2.0, -3.0, 4.0]),
            (both, [-1.0, 2.0, -3.0, -4.0]),
        ] {
            let mut c = f32s(&[1.0, 2.0, 3.0, -4.0]);
            apply_view(&mut c, DType::C64, view).unwrap();
            assert_eq!(c, f32s(&want), "{view:?}");
        }
        let mut ints: Vec<u8> = [5i16, -7, i16::MIN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        apply_view(&mut ints, DType::I16, neg).unwrap();
        let back: Vec<i16> = ints
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(back, [-5, 7, i16::MIN], "wrapping, as torch");
        assert!(apply_view(&mut [1u8], DType::BOOL, neg).is_none());
        assert!(
            apply_view(&mut [0u8; 4], DType::F32, conj).is_some(),
            "a no-op on reals"
        );
    }

    #[test]
    fn boxes_are_placed_where_they_belong_and_clipped_to_the_window() {
        // A 4×3 U8 tensor from two blocks of the first two rows and a block of the last two.
        let mut out = vec![0u8; 12];
        assert_eq!(
            place(&mut out, &[4, 3], 0, &[1, 2, 3, 4], &[0, 0], &[2, 2], 1),
            Some(4)
        );
        assert_eq!(
            place(&mut out, &[4, 3], 0, &[5, 6], &[0, 2], &[2, 1], 1),
            Some(2)
        );
        let rows = [7, 8, 9, 10, 11, 12];
        assert_eq!(
            place(&mut out, &[4, 3], 0, &rows, &[2, 0], &[2, 3], 1),
            Some(6)
        );
        assert_eq!(out, [1, 2, 5, 3, 4, 6, 7, 8, 9, 10, 11, 12]);
        // Rows 1..3 only: half of each row block lands.
        let mut window = vec![0u8; 6];
        let top = [1, 2, 5, 3, 4, 6];
        assert_eq!(
            place(&mut window, &[2, 3], 1, &top, &[0, 0], &[2, 3], 1),
            Some(3)
        );
        assert_eq!(
            place(&mut window, &[2, 3], 1, &rows, &[2, 0], &[2, 3], 1),
            Some(3)
        );
        assert_eq!(window, [3, 4, 6, 7, 8, 9]);
        // 1-d, 0-d, and a box that does not fit.
        let mut v = vec![0u8; 4];
        assert_eq!(place(&mut v, &[4], 0, &[9, 9], &[2], &[2], 1), Some(2));
        assert_eq!(v, [0, 0, 9, 9]);
        let mut s = vec![0u8; 2];
        assert_eq!(place(&mut s, &[], 0, &[1, 2], &[], &[], 2), Some(1));
        assert_eq!(
            place(&mut out, &[4, 3], 0, &[0; 4], &[0, 2], &[2, 2], 1),
            None
        );
    }

    #[test]
    fn a_transposed_matrix_is_gathered_row_major() {
        // Stored row-major as 2×3 [[0,1,2],[3,4,5]]; viewed as its 3×2 transpose.
        let data: Vec<u8> = (0..6).collect();
        assert_eq!(
            gather(&data, 1, &[3, 2], &[1, 3]).unwrap(),
            [0, 3, 1, 4, 2, 5]
        );
    }

    #[test]
    fn a_strided_slice_takes_every_other_element() {
        let data: Vec<u8> = (0..16).collect();
        // Two-byte elements, every other one: elements 0, 2, 4.
        assert_eq!(gather(&data, 2, &[3], &[2]).unwrap(), [0, 1, 4, 5, 8, 9]);
    }

    #[test]
    fn scalars_and_empty_tensors() {
        assert_eq!(gather(&[9, 8], 2, &[], &[]).unwrap(), [9, 8]);
        assert_eq!(gather(&[], 4, &[0, 3], &[3, 1]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn a_broadcast_of_absurd_size_is_refused_not_allocated() {
        assert!(gather(&[1, 2, 3, 4], 4, &[1 << 60], &[0]).is_none());
    }

    #[test]
    fn byte_swapping_reverses_each_element() {
        let mut data = vec![1, 2, 3, 4, 5, 6, 7, 8];
        swap_bytes(&mut data, 4);
        assert_eq!(data, [4, 3, 2, 1, 8, 7, 6, 5]);
    }
}
