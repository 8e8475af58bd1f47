//! Choosing parts of a tree: glob select/ignore with Composer's `ignore_keys` meaning, and
//! matching against an expected tree (Fabric's strict and partial loads, Orbax's abstract
//! state).

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{Dict, Leaf, List, Node, StateTree, path};
use crate::dtype::DType;

/// A glob that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob `{glob}`: {reason}")]
pub struct GlobError {
    /// The glob.
    pub glob: String,
    /// Why it does not parse.
    pub reason: String,
}

pub(crate) fn globset(globs: &[&str]) -> Result<GlobSet, GlobError> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        // As in fnmatch (Composer's ignore_keys): `*` also matches `/`.
        let g = Glob::new(glob).map_err(|e| GlobError {
            glob: (*glob).to_owned(),
            reason: e.kind().to_string(),
        })?;
        builder.add(g);
    }
    builder.build().map_err(|e| GlobError {
        glob: globs.join(" "),
        reason: e.to_string(),
    })
}

/// Keeps (`keep = true`) or drops the nodes whose path matches; a match on a dict or list
/// applies to its whole subtree.
fn filter(node: &Node, at: &str, set: &GlobSet, keep: bool) -> Option<Node> {
    if set.is_match(at) {
        return keep.then(|| node.clone());
    }
    match node {
        Node::Leaf(_) => (!keep).then(|| node.clone()),
        Node::Dict(d) => {
            let kept: Dict = d
                .iter()
                .filter_map(|(k, child)| {
                    filter(child, &path::join(at, &path::escape(k)), set, keep)
                        .map(|c| (k.clone(), c))
                })
                .collect();
            let kept = kept.with_key_kind(d.key_kind());
            (!kept.is_empty() || (!keep && d.is_empty())).then_some(Node::Dict(kept))
        }
        // A list keeps its indices: dropping an element would renumber the rest.
        Node::List(items) => {
            let kept: Vec<Option<Node>> = items
                .iter()
                .enumerate()
                .map(|(i, child)| filter(child, &path::join(at, &i.to_string()), set, keep))
                .collect();
            if kept.iter().all(Option::is_none) && !items.is_empty() {
                return None;
            }
            let kept: Vec<Node> = kept
                .into_iter()
                .map(|c| c.unwrap_or(Node::Leaf(Leaf::None)))
                .collect();
            Some(Node::List(if items.is_tuple() {
                List::tuple(kept)
            } else {
                kept.into()
            }))
        }
    }
}

impl StateTree {
    /// The tree with only the nodes matching one of `globs` (and what lies below them).
    ///
    /// # Errors
    ///
    /// [`GlobError`] for a glob that does not parse.
    pub fn select(&self, globs: &[&str]) -> Result<StateTree, GlobError> {
        self.filter(globs, true)
    }

    /// The globs of `globs` that match no path of this tree (of a dict, a list or a leaf):
    /// a [`select`](Self::select) that keeps nothing of what the caller meant.
    ///
    /// ```
    /// let tree = ckptio::StateTree::from_dict(
    ///     [("model".to_owned(), ckptio::Node::Leaf(ckptio::Leaf::Int(ckptio::Int::Small(1))))]
    ///         .into_iter()
    ///         .collect(),
    /// );
    /// assert_eq!(tree.unmatched(&["model", "ema/*"]).unwrap(), ["ema/*"]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`GlobError`] for a glob that does not parse.
    pub fn unmatched<'g>(&self, globs: &[&'g str]) -> Result<Vec<&'g str>, GlobError> {
        let set = globset(globs)?;
        let matched = self.matched_by(&set);
        Ok(globs
            .iter()
            .zip(matched)
            .filter(|(_, m)| !m)
            .map(|(g, _)| *g)
            .collect())
    }

    /// For each glob of `set`, in order, whether it matches a path of this tree.
    pub(crate) fn matched_by(&self, set: &GlobSet) -> Vec<bool> {
        fn visit(node: &Node, at: &str, set: &GlobSet, matched: &mut [bool]) {
            for i in set.matches(at) {
                matched[i] = true;
            }
            match node {
                Node::Dict(d) => {
                    for (k, child) in d.iter() {
                        visit(child, &path::join(at, &path::escape(k)), set, matched);
                    }
                }
                Node::List(items) => {
                    for (i, child) in items.iter().enumerate() {
                        visit(child, &path::join(at, &i.to_string()), set, matched);
                    }
                }
                Node::Leaf(_) => {}
            }
        }
        let mut matched = vec![false; set.len()];
        for (k, node) in self.root.iter() {
            visit(node, &path::escape(k), set, &mut matched);
        }
        matched
    }

    /// The tree without the nodes matching one of `globs`, exactly as Composer's
    /// `ignore_keys`: `state/model/layer*.weights` drops those leaves, and `state/optimizers`
    /// drops that whole subtree.
    ///
    /// # Errors
    ///
    /// [`GlobError`] for a glob that does not parse.
    pub fn ignore(&self, globs: &[&str]) -> Result<StateTree, GlobError> {
        self.filter(globs, false)
    }

    fn filter(&self, globs: &[&str], keep: bool) -> Result<StateTree, GlobError> {
        Ok(self.filtered_by(&globset(globs)?, keep))
    }

    /// The tree with (`keep = true`) or without the nodes `set` matches, and what lies below
    /// them.
    pub(crate) fn filtered_by(&self, set: &GlobSet, keep: bool) -> StateTree {
        let root = self
            .root
            .iter()
            .filter_map(|(k, node)| {
                filter(node, &path::escape(k), set, keep).map(|n| (k.clone(), n))
            })
            .collect();
        StateTree::from_dict(root)
    }

    /// Matches this tree against `expected`: which expected leaves are missing, which leaves
    /// were not expected, and which tensors differ in dtype or shape.
    ///
    /// With `strict`, any difference is an error; without, missing and unexpected entries are
    /// allowed (a partial load) but type and shape differences still fail. On success the
    /// report holds the matched tree (this tree's leaves at the expected paths) and the
    /// remainder (the leaves that were not expected).
    ///
    /// # Errors
    ///
    /// The [`Report`], when the match fails.
    pub fn match_expected(
        &self,
        expected: &StateTree,
        strict: bool,
    ) -> Result<Report, Box<Report>> {
        let ours: Vec<(String, &Leaf)> = self.leaves().collect();
        let theirs: Vec<(String, &Leaf)> = expected.leaves().collect();
        let wanted: std::collections::HashMap<&str, &Leaf> =
            theirs.iter().map(|(p, l)| (p.as_str(), *l)).collect();
        let have: std::collections::HashSet<&str> = ours.iter().map(|(p, _)| p.as_str()).collect();

        let mut report = Report::default();
        for (p, _) in &theirs {
            if !have.contains(p.as_str()) {
                report.missing.push(p.clone());
            }
        }
        for (p, leaf) in &ours {
            let Some(want) = wanted.get(p.as_str()) else {
                report.unexpected.push(p.clone());
                let _ = report.remainder.insert(p, Node::Leaf((*leaf).clone()));
                continue;
            };
            if let (Leaf::Tensor(got), Leaf::Tensor(want)) = (leaf, want)
                && (got.dtype != want.dtype || got.shape != want.shape)
            {
                report.mismatched.push(Mismatch {
                    path: p.clone(),
                    expected: (want.dtype, want.shape.clone()),
                    found: (got.dtype, got.shape.clone()),
                });
                continue;
            }
            let _ = report.matched.insert(p, Node::Leaf((*leaf).clone()));
        }
        let failed = !report.mismatched.is_empty()
            || (strict && !(report.missing.is_empty() && report.unexpected.is_empty()));
        if failed {
            Err(Box::new(report))
        } else {
            Ok(report)
        }
    }
}

/// A tensor whose dtype or shape is not what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Its path.
    pub path: String,
    /// Expected dtype and shape.
    pub expected: (DType, Vec<u64>),
    /// Found dtype and shape.
    pub found: (DType, Vec<u64>),
}

/// How a tree matched an expected one.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Expected paths the tree lacks.
    pub missing: Vec<String>,
    /// Paths the tree has that were not expected.
    pub unexpected: Vec<String>,
    /// Tensors whose dtype or shape differ.
    pub mismatched: Vec<Mismatch>,
    /// The tree's leaves at expected paths.
    pub matched: StateTree,
    /// The tree's leaves at unexpected paths.
    pub remainder: StateTree,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "missing keys: {}; unexpected keys: {}",
            list(&self.missing),
            list(&self.unexpected)
        )?;
        for m in &self.mismatched {
            write!(
                f,
                "; `{}`: expected {} {:?}, found {} {:?}",
                m.path, m.expected.0, m.expected.1, m.found.0, m.found.1
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

#[cfg(test)]
mod tests {
    use super::super::LazyTensor;
    use super::*;

    fn tensor(dtype: DType, shape: &[u64]) -> Node {
        Node::from(LazyTensor::abstract_(dtype, shape.to_vec()))
    }

    fn composer_state() -> StateTree {
        let mut t = StateTree::new();
        for p in [
            "state/model/layer1.weights",
            "state/model/layer1.bias",
            "state/model/layer2.weights",
        ] {
            t.insert(p, tensor(DType::F32, &[2])).unwrap();
        }
        t.insert(
            "state/optimizers/Adam/state/0/exp_avg",
            tensor(DType::F32, &[2]),
        )
        .unwrap();
        t.insert(
            "rng",
            Node::List(
                vec![
                    Node::Leaf(Leaf::Int(1.into())),
                    Node::Leaf(Leaf::Int(2.into())),
                ]
                .into(),
            ),
        )
        .unwrap();
        t
    }

    fn paths(t: &StateTree) -> Vec<String> {
        t.leaves().map(|(p, _)| p).collect()
    }

    #[test]
    fn ignore_has_composer_meaning() {
        let t = composer_state();
        let kept = t
            .ignore(&["state/model/layer*.weights", "state/optimizers"])
            .unwrap();
        assert_eq!(paths(&kept), ["state/model/layer1.bias", "rng/0", "rng/1"]);
        let kept = t.ignore(&["state/*"]).unwrap();
        assert_eq!(
            paths(&kept),
            ["rng/0", "rng/1"],
            "`*` crosses `/`, as in fnmatch"
        );
    }

    #[test]
    fn select_keeps_matches_and_their_subtrees() {
        let t = composer_state();
        assert_eq!(
            paths(&t.select(&["state/model"]).unwrap()),
            [
                "state/model/layer1.weights",
                "state/model/layer1.bias",
                "state/model/layer2.weights"
            ]
        );
        assert_eq!(
            paths(&t.select(&["*.bias"]).unwrap()),
            ["state/model/layer1.bias"]
        );
        assert_eq!(
            paths(&t.select(&["rng/1"]).unwrap()),
            ["rng/0", "rng/1"],
            "list positions are kept (a None stands in)"
        );
        assert!(t.select(&["[unclosed"]).is_err());
    }

    #[test]
    fn strict_match_reports_missing_unexpected_and_mismatched() {
        let got = composer_state().subtree("state/model").unwrap();
        let mut want = StateTree::new();
        want.insert("layer1.weights", tensor(DType::F32, &[2]))
            .unwrap();
        want.insert("layer1.bias", tensor(DType::F16, &[2]))
            .unwrap();
        want.insert("layer3.weights", tensor(DType::F32, &[2]))
            .unwrap();

        let report = got.match_expected(&want, true).unwrap_err();
        assert_eq!(report.missing, ["layer3.weights"]);
        assert_eq!(report.unexpected, ["layer2.weights"]);
        assert_eq!(report.mismatched.len(), 1);
        assert!(
            report
                .to_string()
                .contains("`layer1.bias`: expected F16 [2], found F32 [2]"),
            "{report}"
        );
    }

    #[test]
    fn partial_match_allows_missing_and_unexpected_and_returns_the_remainder() {
        let got = composer_state().subtree("state/model").unwrap();
        let mut want = StateTree::new();
        want.insert("layer1.weights", tensor(DType::F32, &[2]))
            .unwrap();
        want.insert("layer9.weights", tensor(DType::F32, &[2]))
            .unwrap();
        let report = got.match_expected(&want, false).unwrap();
        assert_eq!(paths(&report.matched), ["layer1.weights"]);
        assert_eq!(paths(&report.remainder), ["layer1.bias", "layer2.weights"]);
        assert_eq!(report.missing, ["layer9.weights"]);
        let mut wrong = StateTree::new();
        wrong
            .insert("layer1.weights", tensor(DType::F32, &[3]))
            .unwrap();
        assert!(
            got.match_expected(&wrong, false).is_err(),
            "shape differences fail even a partial load"
        );
    }
}
