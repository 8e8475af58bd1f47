//! The one bin-packer: items in order, cut into consecutive groups of at most a byte budget.
//! Batches of reads, data files of a checkpoint and shards of a safetensors file all follow
//! this rule. Pure.

/// Cuts `items` (kept in order) into consecutive groups whose sizes add up to at most `max`:
/// a group closes when the next item would take it past `max`, or when `split(last, next)`
/// says the two may not share one. An item larger than `max` is a group of its own. No group
/// is empty; no items, no groups. A `max` of `u64::MAX` is no limit.
pub(crate) fn pack<T>(
    items: Vec<T>,
    max: u64,
    size: impl Fn(&T) -> u64,
    split: impl Fn(&T, &T) -> bool,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0u64;
    for item in items {
        let len = size(&item);
        match groups.last_mut() {
            Some(group)
                if bytes.saturating_add(len) <= max
                    && group.last().is_some_and(|last| !split(last, &item)) =>
            {
                bytes = bytes.saturating_add(len);
                group.push(item);
            }
            _ => {
                bytes = len;
                groups.push(vec![item]);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(groups: Vec<Vec<u64>>) -> Vec<usize> {
        groups.iter().map(Vec::len).collect()
    }

    #[test]
    fn groups_close_before_they_overflow() {
        let items = vec![4u64, 4, 4, 10, 1];
        let no_split = |_: &u64, _: &u64| false;
        assert_eq!(
            sizes(pack(items.clone(), 8, |&n| n, no_split)),
            [2, 1, 1, 1]
        );
        assert_eq!(sizes(pack(items.clone(), 100, |&n| n, no_split)), [5]);
        assert_eq!(sizes(pack(items, 0, |&n| n, no_split)), [1, 1, 1, 1, 1]);
        assert!(pack(Vec::<u64>::new(), 8, |&n| n, no_split).is_empty());
    }

    #[test]
    fn a_split_rule_cuts_between_items_that_may_not_share() {
        // Items of different parity never share a group.
        let items = vec![2u64, 4, 3, 5, 6];
        let groups = pack(items, 100, |&n| n, |a, b| a % 2 != b % 2);
        assert_eq!(groups, [vec![2, 4], vec![3, 5], vec![6]]);
    }

    #[test]
    fn sizes_that_overflow_saturate_instead_of_wrapping() {
        let items = vec![u64::MAX - 1, 2];
        assert_eq!(
            sizes(pack(items.clone(), u64::MAX - 1, |&n| n, |_, _| false)),
            [1, 1]
        );
        assert_eq!(
            sizes(pack(items, u64::MAX, |&n| n, |_, _| false)),
            [2],
            "u64::MAX is no limit at all"
        );
    }
}
