"""Isolation Forest arithmetic, mirroring sklearn.ensemble._iforest, over trees held as plain numeric arrays.

scikit-learn grows the trees (grow); they are then kept, written and read as the arrays of its tree structure
(children, split feature, threshold, node sample counts), never pickled, and scored here in numpy. Scores follow the
original paper, s = 2^(-E[h(x)] / c(n)), in (0, 1]: higher is more anomalous. They equal scikit-learn's
`-IsolationForest.score_samples(X)` for the same trees.
"""

from __future__ import annotations

import numpy as np

from sensor import compiled
from sensor.model.features import FEATURE_HIGH, N_FEATURES

BACKGROUND_FRACTION = 0.1
LEAF = -1


def average_path_length(n) -> np.ndarray:
    """c(n): average path length of an unsuccessful BST search among n points, 0 for n <= 1 and 1 for n == 2."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class Tree:
    __slots__ = ("left", "right", "feature", "threshold", "n_node_samples", "leaf_value", "_safe_feature",
                 "_expected")

    def __init__(self, left, right, feature, threshold, n_node_samples):
        self.left = left
        self.right = right
        self.feature = feature
        self.threshold = threshold
        self.n_node_samples = n_node_samples
        depth = np.zeros(len(left), dtype=np.int64)
        level, d = np.array([0]), 1
        while len(level):
            depth[level] = d
            inner = level[left[level] != LEAF]
            level = np.concatenate((left[inner], right[inner]))
            d += 1
        # sklearn's root depth is 1 and it subtracts 1 per tree; the same arithmetic keeps the sums bit-identical.
        self._expected = average_path_length(n_node_samples)   # c(n) of each node, for path_credit
        self.leaf_value = depth + self._expected - 1.0
        self._safe_feature = np.where(left == LEAF, 0, feature)

    def apply(self, x32: np.ndarray) -> np.ndarray:
        rows = np.arange(len(x32))
        node = np.zeros(len(x32), dtype=np.int64)
        while True:
            child = self.left[node]
            inner = child != LEAF
            if not inner.any():
                return node
            go_left = x32[rows, self._safe_feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, child, self.right[node]), node)

    def path_credit(self, x32: np.ndarray) -> np.ndarray:
        """How much each feature's splits shortened the path of the one vector x32 (float32), in edges: at every
        split on the way down, the expected remaining path before it (c of the node's samples) less the edge taken
        and the expected remaining path after it (c of the child's). These sum, over the path, to
        c(root samples) - h(x): exactly how much shorter than an ordinary point's the path is. A split that keeps
        nearly all samples lengthens it (credit below zero)."""
        credit = np.zeros(len(x32))
        node = 0
        expected = self._expected
        while self.left[node] != LEAF:
            feature = int(self.feature[node])
            child = self.left[node] if x32[feature] <= self.threshold[node] else self.right[node]
            credit[feature] += expected[node] - 1.0 - expected[child]
            node = int(child)
        return credit

    def as_json(self) -> dict:
        return {"children_left": self.left.tolist(), "children_right": self.right.tolist(),
                "feature": self.feature.tolist(), "threshold": self.threshold.tolist(),
                "n_node_samples": self.n_node_samples.tolist()}


def reference_background(count: int, random_state: int) -> np.ndarray:
    """Points drawn uniformly from the feature domain box [0, FEATURE_HIGH], added to the training windows when the
    trees are grown.

    An Isolation Forest only splits inside the range of the samples in a node, so without them a value beyond
    anything seen in training lands with the training extreme and scores no higher, and a feature that never varied
    in training (the external peers of a camera that always talks to the same one cloud server) cannot flag
    anything. The sparse background gives the trees splits out there, between the normal windows and the rest of
    the domain.
    """
    rng = np.random.default_rng(random_state)
    return rng.uniform(0.0, 1.0, (count, N_FEATURES)) * FEATURE_HIGH


class Forest:
    """All the trees as one set of node arrays (each tree's node indices offset by the nodes before it), so one
    pass of numpy operations per level walks every (vector, tree) pair at once: scoring costs a few dozen numpy
    calls per level of depth, not a few per tree and level, whatever the number of trees or vectors."""

    __slots__ = ("left", "right", "feature", "threshold", "leaf_value", "expected", "roots", "denominator")
    ROWS = 4096   # vectors walked together: bounds the (vectors x trees) index matrix at 4096 x trees

    def __init__(self, trees: list[Tree], max_samples: int):
        sizes = [len(t.left) for t in trees]
        self.roots = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        offset = np.repeat(self.roots, sizes)
        stack = lambda kids: np.where(kids == LEAF, np.arange(len(offset)), kids + offset)  # noqa: E731
        # A leaf is its own child, so a walk that has reached one stays there while the others go on.
        self.left = stack(np.concatenate([t.left for t in trees]))
        self.right = stack(np.concatenate([t.right for t in trees]))
        self.feature = np.concatenate([t._safe_feature for t in trees])
        self.threshold = np.concatenate([t.threshold for t in trees])
        self.leaf_value = np.concatenate([t.leaf_value for t in trees])
        self.expected = np.concatenate([t._expected for t in trees])
        self.denominator = len(trees) * float(average_path_length([max_samples])[0])

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        # Trees were grown on float32 data (sklearn casts), and its thresholds sit between float32 values: comparing
        # the float64 input instead could send a value to the other side of a split.
        x32 = np.ascontiguousarray(vectors, dtype=np.float32)
        depths = np.concatenate([self._depths(x32[i:i + self.ROWS]) for i in range(0, len(x32), self.ROWS)]
                                or [np.zeros(0)])
        ratio = depths / self.denominator if self.denominator != 0 else np.ones_like(depths)
        return 2.0 ** -ratio

    def _depths(self, x32: np.ndarray) -> np.ndarray:
        if compiled.extension is None or not compiled.forest:
            return self._depths_numpy(x32)
        out = compiled.extension.forest(self.left, self.right, self.feature, self.threshold, self.leaf_value,
                                        self.roots, x32, x32.shape[1])
        return np.frombuffer(out, dtype=np.float64)

    def _depths_numpy(self, x32: np.ndarray) -> np.ndarray:
        node = np.broadcast_to(self.roots, (len(x32), len(self.roots))).copy()
        values = x32.reshape(-1)
        row_base = (np.arange(len(x32), dtype=np.int64) * x32.shape[1])[:, None]
        while True:
            left = self.left[node]
            if (left == node).all():
                break
            go_left = values[row_base + self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, left, self.right[node])
        # Summed tree by tree, in order (accumulate is sequential), as the per-tree loop did: bit-identical sums.
        return np.add.accumulate(self.leaf_value[node], axis=1)[:, -1] if node.shape[1] else np.zeros(len(x32))


    def credit(self, vector: np.ndarray) -> np.ndarray:
        """forest_credit of one vector, every tree walked at once: per level of depth, each tree still inside
        adds its split's credit to its feature's column (one entry per tree, so in path order, as Tree.path_credit
        adds them), then the trees' columns are summed in tree order. The same sums, bit for bit."""
        x32 = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        trees = np.arange(len(self.roots))
        credit = np.zeros((len(self.roots), len(x32)))
        node = self.roots.copy()
        while True:
            left = self.left[node]
            inner = left != node
            if not inner.any():
                break
            at, feature = node[inner], self.feature[node[inner]]
            child = np.where(x32[feature] <= self.threshold[at], left[inner], self.right[at])
            credit[trees[inner], feature] += self.expected[at] - 1.0 - self.expected[child]
            node[inner] = child
        total = np.add.accumulate(credit, axis=0)[-1] if len(credit) else np.zeros(len(x32))
        return total / max(len(self.roots), 1)


def forest_scores(trees: list[Tree], max_samples: int, vectors: np.ndarray) -> np.ndarray:
    return Forest(trees, max_samples).scores(vectors)


def forest_scores_per_tree(trees: list[Tree], max_samples: int, vectors: np.ndarray) -> np.ndarray:
    """The reference: one tree at a time (Tree.apply). Forest.scores must equal it exactly."""
    x32 = np.ascontiguousarray(vectors, dtype=np.float32)
    depths = np.zeros(len(x32))
    for tree in trees:
        depths += tree.leaf_value[tree.apply(x32)]
    denominator = len(trees) * float(average_path_length([max_samples])[0])
    ratio = depths / denominator if denominator != 0 else np.ones_like(depths)
    return 2.0 ** -ratio


def forest_credit(trees: list[Tree], vector: np.ndarray) -> np.ndarray:
    """Per feature, the mean over the trees of Tree.path_credit: how much its splits shortened the vector's paths.
    The sum over the features is c(max_samples) - E[h(x)], so the score is 2 ** -(1 - sum / c(max_samples)): the
    credit divides the whole of what makes the score high among the features, none of it left over."""
    x32 = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
    total = np.zeros(len(x32))
    for tree in trees:
        total += tree.path_credit(x32)
    return total / max(len(trees), 1)


def grow(x: np.ndarray, *, n_estimators: int, max_samples: int | str, contamination: float, random_state: int,
         n_background: int) -> tuple[list[Tree], int]:
    """Fit scikit-learn's IsolationForest on `x` plus `n_background` reference_background points and export its
    trees as arrays; returns the trees and the number of samples each tree was grown on."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=n_estimators, max_samples=max_samples, contamination=contamination,
                             max_features=1.0, bootstrap=False, random_state=random_state)
    forest.fit(np.vstack([x, reference_background(n_background, random_state)]) if n_background else x)
    # With every feature used, sklearn fits each tree on the original columns; anything else would need the
    # per-tree feature subsets exported too.
    assert getattr(forest, "_max_features", N_FEATURES) == N_FEATURES
    trees = [Tree(np.asarray(t.children_left, dtype=np.int64), np.asarray(t.children_right, dtype=np.int64),
                  np.asarray(t.feature, dtype=np.int64), np.asarray(t.threshold, dtype=np.float64),
                  np.asarray(t.n_node_samples, dtype=np.int64))
             for t in (est.tree_ for est in forest.estimators_)]
    return trees, int(forest.max_samples_)
