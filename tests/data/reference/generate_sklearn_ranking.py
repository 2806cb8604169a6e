#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes sklearn_ranking.json: scikit-learn's ranking metrics and SciPy's normal distribution on small seeded
inputs, the reference that tests/eval/test_ranking.cpp and tests/eval/test_ab_test.cpp check kshot against.

Usage: /usr/bin/python3 tests/data/reference/generate_sklearn_ranking.py [OUT_FILE]
(default OUT_FILE: sklearn_ranking.json beside this script). Needs Debian's python3-sklearn (1.2), python3-scipy
and python3-numpy.

Layout (all matrices are lists of rows; per-user values are null where the metric is undefined for that user):
  "meta":              versions and notes.
  "ndcg":              {"y_true", "y_score", "k" (null = all items), "ignore_ties", "per_user" (ndcg_score on each
                       row alone), "mean" (ndcg_score on the whole matrix)}.
  "roc_auc":           {"y_true" (0/1), "y_score", "per_user" (roc_auc_score per row; null for one-class rows)}.
  "average_precision": {"y_true" (0/1), "y_score", "per_user" (average_precision_score per row; null without a
                       positive)}.
  "ranked":            ranked-list cases: {"relevant" (per user, [item, grade] pairs), "ranked_ids" (best first,
                       -1 = no item), "k", "ndcg_linear"/"ndcg_exponential" (ndcg_score of the graded relevance,
                       resp. 2^grade - 1, against scores that give exactly that ranking), "precision", "recall",
                       "hit_rate", "mrr", "map", "r_precision", "map_at_r" (written out below from their definitions;
                       per user, null for users without a relevant item)}.
  "r_metrics":         score-form R-precision and MAP@R: {"y_true", "y_score", "r_precision", "map_at_r"}, ties
                       broken by increasing column (a stable argsort of -y_score).
  "normal":            {"p", "ppf" (scipy.stats.norm.ppf), "x", "cdf", "sf"}.
  "z_test":            {"successes_a", "trials_a", "successes_b", "trials_b", "alpha", "chi2" and "chi2_p"
                       (scipy.stats.chi2_contingency(correction=False) of the 2x2 table: chi2 = z^2 and the
                       two-sided p-value), "p_greater"/"p_less" (norm.sf(z)/norm.cdf(z)), "ci" (two-sided Wald)}.
  "sample_size":       {"p_baseline", "mde", "alpha", "power", "ratio", "alternative", "n_a_exact" (the
                       unrounded formula), "simulated_power" (Monte Carlo power of the z-test at the rounded
                       sizes, 20000 trials, seed 7; documentation only)}.
"""
import json
import math
import os
import sys
import warnings

import numpy as np
import scipy
import scipy.stats as st
import sklearn
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score


def graded_matrix(rng, n, m, levels, p_zero):
    y = rng.integers(1, levels + 1, size=(n, m)).astype(float)
    y[rng.random((n, m)) < p_zero] = 0.0
    return y


def ndcg_cases():
    rng = np.random.default_rng(11)
    cases = []
    for n, m, tied, ks in [(6, 8, False, [None, 1, 3, 5, 20]), (7, 10, True, [None, 1, 2, 4, 7]),
                           (5, 5, True, [None, 3])]:
        y_true = graded_matrix(rng, n, m, 3, 0.5)
        y_true[0, :] = 0.0  # a user with nothing relevant: scikit-learn gives 0 and counts it
        if tied:
            y_score = rng.integers(0, 3, size=(n, m)).astype(float)
            y_score[1, :] = 1.0  # every score tied
        else:
            y_score = rng.standard_normal((n, m))
        for k in ks:
            for ignore_ties in ([False, True] if not tied else [False]):
                per_user = [float(ndcg_score(y_true[i:i + 1], y_score[i:i + 1], k=k, ignore_ties=ignore_ties))
                            for i in range(n)]
                cases.append({"y_true": y_true.tolist(), "y_score": y_score.tolist(), "k": k,
                              "ignore_ties": ignore_ties, "per_user": per_user,
                              "mean": float(ndcg_score(y_true, y_score, k=k, ignore_ties=ignore_ties))})
    return cases


def binary_cases(metric, one_class_rows):
    rng = np.random.default_rng(23 if metric is roc_auc_score else 29)
    cases = []
    for n, m, tied in [(8, 12, False), (8, 12, True), (4, 40, True)]:
        y_true = (rng.random((n, m)) < 0.35).astype(float)
        y_true[0, 0] = 1.0
        y_true[0, 1] = 0.0
        for row, value in one_class_rows:
            y_true[row, :] = value
        y_score = rng.integers(0, 4, size=(n, m)).astype(float) if tied else rng.standard_normal((n, m))
        per_user = []
        for i in range(n):
            if metric is roc_auc_score and len(np.unique(y_true[i])) < 2:
                per_user.append(None)
            elif metric is average_precision_score and y_true[i].sum() == 0:
                per_user.append(None)
            else:
                per_user.append(float(metric(y_true[i], y_score[i])))
        cases.append({"y_true": y_true.tolist(), "y_score": y_score.tolist(), "per_user": per_user})
    return cases


def ranked_definitions(relevant, ranked, k):
    """The ranked-list metrics of one user written out from their definitions (kshot/eval/ranking.hpp)."""
    rel = dict(relevant)
    r = len(rel)
    if r == 0:
        return None
    seen = set()
    hits_k = hits_r = 0
    ap_k = ap_r = 0.0
    first = None
    for j, item in enumerate(ranked):
        if item < 0 or item not in rel or item in seen:
            continue
        seen.add(item)
        if j < k:
            hits_k += 1
            ap_k += hits_k / (j + 1)
            if first is None:
                first = j + 1
        if j < r:
            hits_r += 1
            ap_r += hits_r / (j + 1)
    return {"precision": hits_k / k, "recall": hits_k / r, "hit_rate": 1.0 if hits_k else 0.0,
            "mrr": 1.0 / first if first else 0.0, "map": ap_k / min(k, r), "r_precision": hits_r / r,
            "map_at_r": ap_r / r}


def ranked_cases():
    rng = np.random.default_rng(31)
    cases = []
    for users, items, length, ks in [(6, 15, 6, [1, 3, 6]), (5, 30, 10, [2, 5, 10])]:
        grades = graded_matrix(rng, users, items, 3, 0.7)
        grades[0, :] = 0.0  # no relevant item: skipped by kshot
        scores = rng.standard_normal((users, items))  # distinct, so the ranking is unambiguous
        order = np.argsort(-scores, axis=1, kind="stable")
        ranked = order[:, :length].astype(int)
        ranked[1, length - 2:] = -1  # a short list padded with -1
        relevant = [[[int(j), float(grades[u, j])] for j in range(items) if grades[u, j] > 0] for u in range(users)]
        # For sklearn, the padded slots of user 1 must hold irrelevant items: rank two irrelevant items from
        # beyond the list there, then everything else in its original order.
        sk_scores = scores.copy()
        head = [int(j) for j in order[1, :length - 2]]
        fillers = [int(j) for j in order[1, length:] if grades[1, j] == 0][:2]
        assert len(fillers) == 2
        sk_order = head + fillers + [int(j) for j in order[1] if int(j) not in head and int(j) not in fillers]
        for position, item in enumerate(sk_order):
            sk_scores[1, item] = -float(position)
        for k in ks:
            case = {"relevant": relevant, "ranked_ids": ranked.tolist(), "k": k}
            names = ["precision", "recall", "hit_rate", "mrr", "map", "r_precision", "map_at_r"]
            values = [ranked_definitions(relevant[u], ranked[u].tolist(), k) for u in range(users)]
            for name in names:
                case[name] = [v[name] if v else None for v in values]
            for key, gains in [("ndcg_linear", grades), ("ndcg_exponential", np.exp2(grades) - 1)]:
                case[key] = [float(ndcg_score(gains[u:u + 1], sk_scores[u:u + 1], k=k)) if grades[u].sum() > 0
                             else None for u in range(users)]
            cases.append(case)
    return cases


def r_metric_cases():
    rng = np.random.default_rng(37)
    cases = []
    for n, m, tied in [(6, 10, False), (6, 10, True)]:
        y_true = (rng.random((n, m)) < 0.4).astype(float)
        y_true[0, :] = 0.0
        y_score = rng.integers(0, 3, size=(n, m)).astype(float) if tied else rng.standard_normal((n, m))
        r_precision, map_at_r = [], []
        for i in range(n):
            r = int(y_true[i].sum())
            if r == 0:
                r_precision.append(None)
                map_at_r.append(None)
                continue
            rel = y_true[i][np.argsort(-y_score[i], kind="stable")][:r]
            precision_at = np.cumsum(rel) / np.arange(1, r + 1)
            r_precision.append(float(rel.sum() / r))
            map_at_r.append(float((precision_at * rel).sum() / r))
        cases.append({"y_true": y_true.tolist(), "y_score": y_score.tolist(), "r_precision": r_precision,
                      "map_at_r": map_at_r})
    return cases


def normal_values():
    p = [1e-300, 1e-100, 1e-20, 1e-10, 1e-5, 1e-3, 0.01, 0.02425, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75,
         0.8, 0.9, 0.95, 0.975, 0.99, 0.999, 0.999999, 1 - 1e-10]
    x = [-38.0, -20.0, -8.0, -3.0, -1.96, -1.0, -0.1, 0.0, 0.5, 1.0, 1.6448536269514722, 2.5, 5.0, 9.0]
    return {"p": p, "ppf": [float(st.norm.ppf(v)) for v in p], "x": x, "cdf": [float(st.norm.cdf(v)) for v in x],
            "sf": [float(st.norm.sf(v)) for v in x]}


def z_cases():
    out = []
    for xa, na, xb, nb, alpha in [(200, 1000, 250, 1000, 0.05), (120, 2400, 150, 2500, 0.05),
                                  (31, 1000, 38, 900, 0.1), (4500, 100000, 4720, 101000, 0.01),
                                  (50, 50, 48, 60, 0.05)]:
        table = np.array([[xa, na - xa], [xb, nb - xb]])
        chi2, chi2_p, _, _ = st.chi2_contingency(table, correction=False)
        pa, pb = xa / na, xb / nb
        pooled = (xa + xb) / (na + nb)
        z = (pb - pa) / math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
        se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
        half = st.norm.ppf(1 - alpha / 2) * se
        out.append({"successes_a": xa, "trials_a": na, "successes_b": xb, "trials_b": nb, "alpha": alpha,
                    "chi2": float(chi2), "chi2_p": float(chi2_p), "p_greater": float(st.norm.sf(z)),
                    "p_less": float(st.norm.cdf(z)), "ci": [pb - pa - half, pb - pa + half]})
    return out


def simulated_power(p1, p2, na, nb, alpha, alternative, reps=20000, seed=7):
    rng = np.random.default_rng(seed)
    xa = rng.binomial(na, p1, reps)
    xb = rng.binomial(nb, p2, reps)
    pooled = (xa + xb) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    z = np.where(se > 0, (xb / nb - xa / na) / np.where(se > 0, se, 1), 0.0)
    if alternative == "two_sided":
        p = 2 * st.norm.sf(np.abs(z))
    elif alternative == "greater":
        p = st.norm.sf(z)
    else:
        p = st.norm.cdf(z)
    return float(np.mean(p < alpha))


def sample_size_cases():
    out = []
    for p1, mde, alpha, power, ratio, alternative in [(0.10, 0.02, 0.05, 0.8, 1.0, "two_sided"),
                                                      (0.05, 0.01, 0.05, 0.9, 1.0, "two_sided"),
                                                      (0.20, -0.03, 0.05, 0.8, 2.0, "two_sided"),
                                                      (0.03, 0.005, 0.05, 0.8, 1.0, "greater"),
                                                      (0.50, -0.05, 0.1, 0.7, 0.5, "less")]:
        p2 = p1 + mde
        za = st.norm.ppf(1 - alpha / 2) if alternative == "two_sided" else st.norm.ppf(1 - alpha)
        zb = st.norm.ppf(power)
        pooled = (p1 + ratio * p2) / (1 + ratio)
        n_a = (za * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio)) +
               zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2) / ratio)) ** 2 / mde ** 2
        na = math.ceil(n_a)
        nb = math.ceil(ratio * na)
        out.append({"p_baseline": p1, "mde": mde, "alpha": alpha, "power": power, "ratio": ratio,
                    "alternative": alternative, "n_a_exact": n_a,
                    "simulated_power": simulated_power(p1, p2, na, nb, alpha, alternative)})
    return out


def main():
    out_file = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                  "sklearn_ranking.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no case may rely on a warning path
        data = {
            "meta": {"sklearn": sklearn.__version__, "scipy": scipy.__version__, "numpy": np.__version__,
                     "notes": "per-user values are the sklearn call on that row alone; null where undefined"},
            "ndcg": ndcg_cases(),
            "roc_auc": binary_cases(roc_auc_score, [(1, 1.0), (2, 0.0)]),
            "average_precision": binary_cases(average_precision_score, [(1, 1.0), (2, 0.0)]),
            "ranked": ranked_cases(),
            "r_metrics": r_metric_cases(),
            "normal": normal_values(),
            "z_test": z_cases(),
            "sample_size": sample_size_cases(),
        }
    with open(out_file, "w") as f:
        json.dump(data, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
