//! Turning stored elements into a contiguous, little-endian, row-major buffer. Pure.

use crate::dtype::DType;

/// Bytes from the first stored element to the last, for `shape` and element `strides`
/// (`None` on overflow; 0 for an empty tensor).
pub fn strided_extent(dtype: DType, shape: &[u64], strides: &[u64]) -> Option<u64> {
    if shape.contains(&0) {
        return Some(0);
    }
    let elem = dtype.bits() / 8;
    let last = shape.iter().zip(strides).try_fold(0u64, |acc, (&d, &s)| {
        acc.checked_add((d - 1).checked_mul(s)?)
    })?;
    last.checked_add(1)?.checked_mul(elem)
}

/// The elements of a strided tensor, gathered into row-major order. `data` starts at the first
/// element; the caller has checked it spans [`strided_extent`] bytes. `None` when the output
/// cannot be allocated (a zero stride can make a huge tensor of a few stored bytes).
pub fn gather(data: &[u8], elem: usize, shape: &[u64], strides: &[u64]) -> Option<Vec<u8>> {
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

/// Reverses the bytes of every `elem`-byte element (big-endian storage to little-endian).
pub fn swap_bytes(data: &mut [u8], elem: usize) {
    if elem > 1 {
        data.chunks_exact_mut(elem).for_each(<[u8]>::reverse);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transposed_matrix_is_gathered_row_major() {
        // Stored row-major as 2×3 [[0,1,2],[3,4,5]]; viewed as its 3×2 transpose.
        let data: Vec<u8> = (0..6).collect();
        assert_eq!(
            gather(&data, 1, &[3, 2], &[1, 3]).unwrap(),
            [0, 3, 1, 4, 2, 5]
        );
        assert_eq!(strided_extent(DType::U8, &[3, 2], &[1, 3]), Some(6));
    }

    #[test]
    fn a_strided_slice_takes_every_other_element() {
        let data: Vec<u8> = (0..16).collect();
        // Two-byte elements, every other one: elements 0, 2, 4.
        assert_eq!(gather(&data, 2, &[3], &[2]).unwrap(), [0, 1, 4, 5, 8, 9]);
        assert_eq!(strided_extent(DType::U16, &[3], &[2]), Some(10));
    }

    #[test]
    fn scalars_and_empty_tensors() {
        assert_eq!(gather(&[9, 8], 2, &[], &[]).unwrap(), [9, 8]);
        assert_eq!(gather(&[], 4, &[0, 3], &[3, 1]).unwrap(), Vec::<u8>::new());
        assert_eq!(strided_extent(DType::F32, &[], &[]), Some(4));
        assert_eq!(strided_extent(DType::F32, &[0, 5], &[5, 1]), Some(0));
        assert_eq!(
            strided_extent(DType::F32, &[u64::MAX, 2], &[u64::MAX, 1]),
            None
        );
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
