//! Cutting a tensor whose contiguous bytes exceed a budget into row-major runs that each fit
//! it: rows of the first dimension, and within a single row that is still too large, rows of
//! the next. The runs' bytes, one after another, are the tensor's. A zero stride can make a
//! tensor of a few stored bytes gigabytes long; split, it is written gigabytes long without
//! being held. Pure.

use crate::tree::LazyTensor;

/// `t` as runs of at most `budget` contiguous bytes, in order; a run that cannot be cut
/// further (one element, or one row of a tensor in pieces) may exceed it.
pub(crate) fn split(t: LazyTensor, budget: u64) -> Vec<LazyTensor> {
    let mut out = Vec::new();
    cut(t, budget.max(1), &mut out);
    out
}

fn cut(t: LazyTensor, budget: u64, out: &mut Vec<LazyTensor>) {
    let rows = t.shape.first().copied().unwrap_or(0);
    if t.nbytes() <= budget || rows == 0 {
        out.push(t);
        return;
    }
    if rows == 1 {
        match t.squeeze_first() {
            Some(inner) => {
                // The runs of `[n]` are `[k]`; give each back its leading 1.
                let mut runs = Vec::new();
                cut(inner, budget, &mut runs);
                out.extend(runs.into_iter().map(|r| unsqueeze(r, &t)));
            }
            None => out.push(t),
        }
        return;
    }
    let row = (t.nbytes() / rows).max(1);
    let per = (budget / row).clamp(1, rows);
    let mut start = 0;
    while start < rows {
        let end = (start + per).min(rows);
        match t.rows(start..end) {
            Some(part) => cut(part, budget, out),
            None => {
                out.push(t);
                return;
            }
        }
        start = end;
    }
}

/// `run`, a part of `t` squeezed of its leading 1, with the 1 back.
fn unsqueeze(run: LazyTensor, t: &LazyTensor) -> LazyTensor {
    let mut shape = vec![1];
    shape.extend(&run.shape);
    let strides = if run.strides.is_empty() {
        Vec::new()
    } else {
        let mut strides = vec![t.strides.first().copied().unwrap_or(0)];
        strides.extend(&run.strides);
        strides
    };
    LazyTensor {
        shape,
        strides,
        ..run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::tree::{Inline, TensorData};

    fn inline(bytes: Vec<u8>, shape: &[u64], strides: &[u64]) -> LazyTensor {
        LazyTensor {
            dtype: DType::U8,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            data: TensorData::Inline(Inline {
                bytes: bytes.into(),
                big_endian: false,
                origin: "test".into(),
                checked: false,
            }),
            view: Default::default(),
            quantized: None,
        }
    }

    #[test]
    fn a_tensor_within_the_budget_is_one_run() {
        let t = inline(vec![0; 12], &[3, 4], &[]);
        assert_eq!(split(t, 12).len(), 1);
    }

    #[test]
    fn rows_are_grouped_up_to_the_budget() {
        let t = inline((0..24).collect(), &[6, 4], &[]);
        let runs = split(t, 8);
        let shapes: Vec<_> = runs.iter().map(|r| r.shape.clone()).collect();
        assert_eq!(shapes, [[2, 4], [2, 4], [2, 4]]);
    }

    #[test]
    fn an_expanded_element_is_cut_into_runs_that_all_read_it() {
        // One stored byte seen as 1 × 1000 (stride 0): runs of 300 elements.
        let t = inline(vec![7], &[1, 1000], &[0, 0]);
        let runs = split(t, 300);
        assert_eq!(runs.iter().map(LazyTensor::numel).sum::<u64>(), 1000);
        assert!(runs.iter().all(|r| r.nbytes() <= 300 && r.shape[0] == 1));
        for r in &runs {
            let TensorData::Inline(i) = &r.data else {
                panic!()
            };
            assert_eq!(&i.bytes[..], [7]);
        }
    }

    #[test]
    fn strided_rows_keep_their_strides_and_read_only_their_span() {
        // A 4 × 2 transpose of a 2 × 4 matrix: rows are columns of the stored one.
        let t = inline((0..8).collect(), &[4, 2], &[1, 4]);
        let runs = split(t, 4);
        assert_eq!(runs.len(), 2);
        let TensorData::Inline(second) = &runs[1].data else {
            panic!()
        };
        assert_eq!(runs[1].strides, [1, 4]);
        assert_eq!(&second.bytes[..], [2, 3, 4, 5, 6, 7]);
    }
}
