//! Whether boxes tile a tensor exactly: each inside it, none overlapping another, their
//! volumes adding up to its elements. Checked before anything is allocated or read, so a
//! tensor declared huge with one small chunk is refused by what it claims, not after its
//! memory has been zero-filled. Pure.

/// The most boxes one tensor may be stored in.
pub const MAX_BOXES: usize = 1 << 16;

/// Checks that the boxes (`offsets`, `sizes`) cover `shape` exactly.
///
/// Disjointness is checked by a sweep along the dimension where the boxes start at the most
/// different places, comparing a box only with those still open there: linear for the
/// layouts sharding makes (rows, columns, grids), quadratic only for boxes that all overlap
/// along every dimension, which the volume check has usually refused already.
///
/// # Errors
///
/// A message saying which box does not fit or which two overlap, or how many elements the
/// boxes cover.
pub fn check<'a>(
    shape: &[u64],
    boxes: impl ExactSizeIterator<Item = (&'a [u64], &'a [u64])> + Clone,
) -> Result<(), String> {
    let n = boxes.len();
    if n > MAX_BOXES {
        return Err(format!(
            "it is stored in {n} chunks (more than {MAX_BOXES})"
        ));
    }
    let numel = crate::dtype::numel(shape).ok_or("its element count overflows")?;
    let mut volume = 0u64;
    for (offsets, sizes) in boxes.clone() {
        if offsets.len() != shape.len() || sizes.len() != shape.len() {
            return Err(format!(
                "its chunk at {offsets:?} of size {sizes:?} has not {} dimensions",
                shape.len()
            ));
        }
        let inside = offsets
            .iter()
            .zip(sizes)
            .zip(shape)
            .all(|((&o, &s), &d)| o.checked_add(s).is_some_and(|end| end <= d));
        if !inside {
            return Err(format!(
                "its chunk at {offsets:?} of size {sizes:?} reaches outside {shape:?}"
            ));
        }
        let v = crate::dtype::numel(sizes).ok_or("a chunk's element count overflows")?;
        volume = volume
            .checked_add(v)
            .ok_or("its chunks' element counts overflow")?;
    }
    if volume != numel {
        return Err(format!(
            "its chunks hold {volume} elements, not its {numel}"
        ));
    }
    disjoint(shape.len(), boxes.filter(|(_, s)| !s.contains(&0)))
}

/// Finds two boxes that overlap, if any.
fn disjoint<'a>(
    dims: usize,
    boxes: impl Iterator<Item = (&'a [u64], &'a [u64])> + Clone,
) -> Result<(), String> {
    let Some(axis) = (0..dims).max_by_key(|&d| {
        let mut starts: Vec<u64> = boxes.clone().map(|(o, _)| o[d]).collect();
        starts.sort_unstable();
        starts.dedup();
        starts.len()
    }) else {
        // Scalars: one box of one element, which the volume check has counted.
        return Ok(());
    };
    let mut sorted: Vec<(&[u64], &[u64])> = boxes.collect();
    sorted.sort_unstable_by_key(|(o, _)| o[axis]);
    let mut open: Vec<(&[u64], &[u64])> = Vec::new();
    for (offsets, sizes) in sorted {
        open.retain(|(o, s)| o[axis] + s[axis] > offsets[axis]);
        if let Some((o, s)) = open.iter().find(|(o, s)| overlap(o, s, offsets, sizes)) {
            return Err(format!(
                "its chunks at {o:?} (size {s:?}) and {offsets:?} (size {sizes:?}) overlap"
            ));
        }
        open.push((offsets, sizes));
    }
    Ok(())
}

fn overlap(a: &[u64], a_size: &[u64], b: &[u64], b_size: &[u64]) -> bool {
    (0..a.len()).all(|d| a[d] < b[d] + b_size[d] && b[d] < a[d] + a_size[d])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(shape: &[u64], boxes: &[(Vec<u64>, Vec<u64>)]) -> Result<(), String> {
        check(
            shape,
            boxes.iter().map(|(o, s)| (o.as_slice(), s.as_slice())),
        )
    }

    #[test]
    fn rows_columns_and_grids_tile_exactly() {
        let rows: Vec<_> = (0..4).map(|i| (vec![i * 2, 0], vec![2, 3])).collect();
        run(&[8, 3], &rows).unwrap();
        let cols: Vec<_> = (0..3).map(|i| (vec![0, i], vec![8, 1])).collect();
        run(&[8, 3], &cols).unwrap();
        let grid: Vec<_> = (0..4)
            .flat_map(|i| (0..3).map(move |j| (vec![i * 2, j], vec![2, 1])))
            .collect();
        run(&[8, 3], &grid).unwrap();
        run(&[], &[(vec![], vec![])]).unwrap();
        run(&[0, 4], &[(vec![0, 0], vec![0, 4])]).unwrap();
    }

    #[test]
    fn a_huge_tensor_with_one_small_chunk_is_refused_by_its_claim() {
        let err = run(&[1 << 30], &[(vec![0], vec![1])]).unwrap_err();
        assert!(err.contains("hold 1 elements, not its 1073741824"), "{err}");
    }

    #[test]
    fn overlapping_chunks_that_add_up_are_refused() {
        // Two copies of the top half: the volume is right, the bottom half is a hole.
        let err = run(
            &[4, 2],
            &[(vec![0, 0], vec![2, 2]), (vec![0, 0], vec![2, 2])],
        )
        .unwrap_err();
        assert!(err.contains("overlap"), "{err}");
        let err = run(
            &[4, 4],
            &[
                (vec![0, 0], vec![2, 4]),
                (vec![1, 0], vec![1, 4]),
                (vec![3, 0], vec![1, 4]),
            ],
        )
        .unwrap_err();
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn chunks_outside_the_tensor_or_of_the_wrong_rank_are_refused() {
        let err = run(&[4], &[(vec![2], vec![4])]).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        let err = run(&[4], &[(vec![u64::MAX], vec![2])]).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        let err = run(&[4], &[(vec![0, 0], vec![4, 1])]).unwrap_err();
        assert!(err.contains("dimensions"), "{err}");
    }

    #[test]
    fn too_many_chunks_are_refused_before_they_are_looked_at() {
        let boxes = vec![(vec![0], vec![1]); MAX_BOXES + 1];
        let err = run(&[1], &boxes).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
