//! Turning stored elements into a contiguous, little-endian, row-major buffer. Pure.

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
