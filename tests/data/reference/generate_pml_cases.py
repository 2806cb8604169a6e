#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the generated pytorch-metric-learning reference cases, pml_gen_<snake_class>_<k>.json.

Usage: KSHOT_PML_SRC=DIR /usr/bin/python3 tests/data/reference/generate_pml_cases.py OUT_DIR [FILTER]

KSHOT_PML_SRC names the directory that holds pytorch-metric-learning 2.8.1's source package (the directory
that contains `pytorch_metric_learning/`, i.e. the `src` directory of a checkout of
https://github.com/KevinMusgrave/pytorch-metric-learning). The package is imported from there and run as
is: this script only builds inputs, calls PML's losses and miners, and records what they return. It needs
PyTorch, NumPy, SciPy and tqdm (PML imports them). FILTER, when given, is a substring of the case names to
write (the other pml_gen_* files are then left alone); without it every pml_gen_*.json in OUT_DIR is
replaced.

Every case is small and seeded, in float64 (torch's default dtype is set to float64, so the tensors PML
creates itself, such as MarginLoss's beta, are float64 too): n = 8 to 16 rows of standard-normal
embeddings (times a per-case scale), d = 4 to 8, labels from per-class counts shuffled with the seed. The
losses run with non-default parameters, other distances and reducers, and tuples mined by PML's miners
(recorded in inputs.indices_tuple and in a "miner" field). Learnable parameters (proxies, W, beta) are set
from the seed instead of PML's initialisation and recorded in inputs; their gradients are in grad. The
per-sub-loss elements handed to the reducer are recorded in outputs.sub_losses. Cases whose miner output
changes under a tiny perturbation of the embeddings (a quantity within rounding of a threshold) are
re-drawn with the next seed, so that an implementation in double precision mines the same tuple.

The layout is the one of the other pml_*.json files in this directory (see README.md there).
"""
import json
import math
import os
import sys
import zlib

PEER = "pytorch-metric-learning 2.8.1 (peer-code)"
PEER_META = {
    "repo": "KevinMusgrave/pytorch-metric-learning",
    "version": "2.8.1",
    "commit": "216a792c22b0154d3d3bf008a7317edc7d677e71",
}
MAX_FILE_BYTES = 10000

REDUCER_TEXT = {
    "MeanReducer": "mean over all loss elements",
    "AvgNonZeroReducer": "mean over loss elements that are > 0 (0 if none)",
    "SumReducer": "sum of all loss elements",
    "DivisorReducer": "sum of loss elements divided by a divisor supplied by the loss",
    "MultipleReducers": "each sub-loss reduced separately by its own reducer, then the reduced sub-losses are summed",
}

# Every constructor parameter of each loss (name -> PML's default), recorded in "params" with the values
# used. Checked against the constructors' signatures at run time.
LOSS_PARAMS = {
    "ContrastiveLoss": {"pos_margin": 0.0, "neg_margin": 1.0},
    "TripletMarginLoss": {"margin": 0.05, "swap": False, "smooth_loss": False, "triplets_per_anchor": "all"},
    "MarginLoss": {"margin": 0.2, "nu": 0.0, "beta": 1.2, "triplets_per_anchor": "all", "learn_beta": False,
                   "num_classes": None},
    "NTXentLoss": {"temperature": 0.07},
    "SupConLoss": {"temperature": 0.1},
    "MultiSimilarityLoss": {"alpha": 2.0, "beta": 50.0, "base": 0.5},
    "CircleLoss": {"m": 0.4, "gamma": 80.0},
    "ProxyNCALoss": {"num_classes": None, "embedding_size": None, "softmax_scale": 1.0},
    "ProxyAnchorLoss": {"num_classes": None, "embedding_size": None, "margin": 0.1, "alpha": 32.0},
    "ArcFaceLoss": {"num_classes": None, "embedding_size": None, "margin": 28.6, "scale": 64.0},
    "CosFaceLoss": {"num_classes": None, "embedding_size": None, "margin": 0.35, "scale": 64.0},
    "NPairsLoss": {},
    "LiftedStructureLoss": {"neg_margin": 1.0, "pos_margin": 0.0},
    "GeneralizedLiftedStructureLoss": {"neg_margin": 1.0, "pos_margin": 0.0},
    "FastAPLoss": {"num_bins": 10},
}
MINER_PARAMS = {
    "BatchHardMiner": {},
    "BatchEasyHardMiner": {"pos_strategy": "easy", "neg_strategy": "semihard", "allowed_pos_range": None,
                           "allowed_neg_range": None},
    "TripletMarginMiner": {"margin": 0.2, "type_of_triplets": "all"},
    "PairMarginMiner": {"pos_margin": 0.2, "neg_margin": 0.8},
    "MultiSimilarityMiner": {"epsilon": 0.1},
}
PROXY_LOSSES = {"ProxyNCALoss", "ProxyAnchorLoss"}
W_LOSSES = {"ArcFaceLoss", "CosFaceLoss"}


# ---------------------------------------------------------------------------------------------------------
# Case specifications


def dist(name, **kw):
    """A distance: (class name, keyword arguments)."""
    return (name, kw)


def miner(name, distance=None, **kw):
    """A miner: (class name, keyword arguments, distance or None for the miner's default)."""
    return (name, kw, distance)


def case(cls, kw=None, distance=None, reducer=None, mined=None, counts=(4, 4, 4), d=6, num_classes=None,
         scale=1.0, beta_center=None, name=None):
    """One case. counts: rows per class (a 0 leaves that class out of the batch; with proxies or W it still
    has one); num_classes: for the proxy and large-margin losses (default len(counts)) and the margin loss's
    per-class beta; beta_center: the centre of the learnable beta drawn from the seed; name: the class the
    file is named after (default the loss)."""
    return {"cls": cls, "kw": dict(kw or {}), "distance": distance, "reducer": reducer, "miner": mined,
            "counts": list(counts), "d": d, "num_classes": num_classes, "scale": scale,
            "beta_center": beta_center, "name": name or cls}


LP = dist("LpDistance")
LP2 = dist("LpDistance", power=2)
LP_RAW = dist("LpDistance", normalize_embeddings=False)
LP_RAW2 = dist("LpDistance", normalize_embeddings=False, power=2)
LP1 = dist("LpDistance", p=1)
COS = dist("CosineSimilarity")
COS2 = dist("CosineSimilarity", power=2)
DOT = dist("DotProductSimilarity")
DOT_RAW = dist("DotProductSimilarity", normalize_embeddings=False)

MEAN, NONZERO, SUM = "MeanReducer", "AvgNonZeroReducer", "SumReducer"


def loss_cases():
    C = []
    # ContrastiveLoss(pos_margin, neg_margin): two sub-losses, one reducer per part.
    L = "ContrastiveLoss"
    C += [
        case(L, {"pos_margin": 0.2, "neg_margin": 0.9}),
        case(L, {"pos_margin": 0.1, "neg_margin": 1.6}, LP2, MEAN, counts=(3, 3, 3, 3), d=5),
        case(L, {"pos_margin": 0.5, "neg_margin": 3.0}, LP_RAW, SUM, counts=(4, 3, 3), d=4),
        case(L, {"pos_margin": 0.4, "neg_margin": 1.3}, LP1, NONZERO, counts=(5, 4, 1), d=6),
        case(L, {"pos_margin": 0.6, "neg_margin": 0.1}, COS, MEAN, counts=(4, 4, 2, 2), d=6),
        case(L, {"pos_margin": 1.0, "neg_margin": -0.2}, DOT_RAW, SUM, counts=(3, 3, 3, 1), d=4, scale=0.5),
        case(L, {"pos_margin": 0.3, "neg_margin": 0.5}, DOT, NONZERO, counts=(4, 4, 4), d=5),
        case(L, {"pos_margin": 0.25, "neg_margin": 1.1}, mined=miner("PairMarginMiner", pos_margin=0.4,
                                                                     neg_margin=1.0), counts=(5, 4, 3, 1)),
        case(L, {"pos_margin": 0.8, "neg_margin": 0.2}, COS, MEAN,
             miner("TripletMarginMiner", COS, margin=0.3, type_of_triplets="all"), counts=(3, 3, 3), d=5),
    ]
    # TripletMarginLoss(margin, swap, smooth_loss), triplets_per_anchor "all".
    L = "TripletMarginLoss"
    C += [
        case(L, {"margin": 0.1}, counts=(4, 4), d=4),
        case(L, {"margin": 0.2, "swap": True}, counts=(3, 3, 2), d=5),
        case(L, {"margin": 0.3, "smooth_loss": True}, LP2, MEAN, counts=(4, 4), d=4),
        case(L, {"margin": 0.15, "swap": True}, COS, SUM, counts=(3, 3, 2), d=6),
        case(L, {"margin": 1.0}, LP_RAW, NONZERO, counts=(4, 3, 1), d=4),
        case(L, {"margin": 0.2, "swap": True, "smooth_loss": True}, LP1, counts=(3, 3, 2), d=5),
        case(L, {"margin": 0.5, "swap": True}, DOT_RAW, MEAN, miner("BatchHardMiner", DOT_RAW),
             counts=(4, 4, 3, 1), d=6, scale=0.5),
        case(L, {"margin": 0.2}, COS, None, miner("TripletMarginMiner", COS, margin=0.2,
                                                  type_of_triplets="semihard"), counts=(3, 3, 3), d=6),
        case(L, {"margin": 0.1, "smooth_loss": True}, DOT, NONZERO, counts=(4, 4), d=5),
    ]
    # MarginLoss(margin, nu, beta, learn_beta, num_classes), triplets_per_anchor "all".
    L = "MarginLoss"
    C += [
        case(L, {"margin": 0.1, "beta": 1.0}, counts=(4, 4), d=4),
        case(L, {"margin": 0.3, "beta": 1.6}, LP2, MEAN, counts=(3, 3, 2), d=5),
        case(L, {"nu": 0.1, "beta": 1.2, "learn_beta": True}, counts=(4, 4), d=4, beta_center=1.2),
        case(L, {"nu": 0.05, "beta": 1.2, "learn_beta": True, "num_classes": 3}, counts=(3, 3, 2), d=5,
             beta_center=1.2),
        case(L, {"margin": 0.15, "nu": 0.2, "beta": 0.2, "learn_beta": True, "num_classes": 4}, COS, MEAN,
             counts=(4, 3, 0, 1), d=5, beta_center=0.1),
        case(L, {"nu": 0.1, "beta": 1.1, "learn_beta": True, "num_classes": 3}, LP1, SUM, counts=(3, 3, 2), d=4,
             beta_center=1.1),
        case(L, {"margin": 0.25, "nu": 0.3, "beta": 1.0, "learn_beta": True}, None, NONZERO, counts=(4, 4),
             d=4, beta_center=1.3),
        case(L, {"margin": 0.1, "nu": 0.1, "beta": 1.2, "learn_beta": True, "num_classes": 4},
             mined=miner("TripletMarginMiner", margin=0.1, type_of_triplets="hard"), counts=(3, 2, 2, 1), d=5,
             beta_center=1.2),
        case(L, {"nu": 0.05, "beta": 1.2, "learn_beta": True, "num_classes": 3}, None, NONZERO,
             miner("PairMarginMiner", pos_margin=0.9, neg_margin=1.0), counts=(4, 4, 4), d=5, beta_center=1.2),
    ]
    # NTXentLoss(temperature).
    L = "NTXentLoss"
    C += [
        case(L, {"temperature": 0.1}),
        case(L, {"temperature": 0.5}, LP, SUM, counts=(3, 3, 3, 3), d=5),
        case(L, {"temperature": 0.2}, DOT_RAW, NONZERO, counts=(4, 4, 3, 1), scale=0.5),
        case(L, {"temperature": 1.0}, LP2, MEAN, counts=(5, 5), d=4),
        case(L, {"temperature": 0.3}, LP1, counts=(4, 3, 3, 2), d=5),
        case(L, {"temperature": 0.05}, DOT, SUM, counts=(3, 3, 3, 1), d=8),
        case(L, {"temperature": 0.1}, mined=miner("PairMarginMiner", COS, pos_margin=0.5, neg_margin=0.3)),
        case(L, {"temperature": 0.25}, LP_RAW, mined=miner("MultiSimilarityMiner", epsilon=0.2),
             counts=(4, 4, 3, 1), d=5),
    ]
    # SupConLoss(temperature).
    L = "SupConLoss"
    C += [
        case(L, {"temperature": 0.2}),
        case(L, {"temperature": 0.5}, LP, MEAN, counts=(3, 3, 3, 3), d=5),
        case(L, {"temperature": 0.07}, DOT_RAW, SUM, counts=(4, 4, 3, 1), scale=0.5),
        case(L, {"temperature": 1.0}, LP2, MEAN, counts=(5, 5), d=4),
        case(L, {"temperature": 0.3}, LP1, counts=(4, 3, 3, 2), d=5),
        case(L, {"temperature": 0.1}, DOT, SUM, counts=(3, 3, 3, 1), d=8),
        case(L, {"temperature": 0.15}, mined=miner("BatchEasyHardMiner", COS, pos_strategy="easy",
                                                   neg_strategy="hard")),
        case(L, {"temperature": 0.1}, LP_RAW, None,
             miner("TripletMarginMiner", LP_RAW, margin=0.5, type_of_triplets="all"), counts=(3, 3, 3), d=4),
    ]
    # MultiSimilarityLoss(alpha, beta, base).
    L = "MultiSimilarityLoss"
    C += [
        case(L, {"alpha": 1.0, "beta": 20.0, "base": 0.3}),
        case(L, {"alpha": 3.0, "beta": 40.0, "base": 0.6}, None, SUM, counts=(3, 3, 3, 3), d=5),
        case(L, {"alpha": 2.0, "beta": 10.0, "base": 1.0}, LP, NONZERO, counts=(4, 4, 3, 1)),
        case(L, {"alpha": 0.5, "beta": 5.0, "base": 2.0}, LP2, MEAN, counts=(5, 5), d=4),
        case(L, {"alpha": 2.0, "beta": 8.0, "base": 0.5}, DOT_RAW, counts=(4, 3, 3, 2), d=5, scale=0.5),
        case(L, {"alpha": 1.5, "beta": 30.0, "base": 0.2}, DOT, counts=(3, 3, 3, 1), d=8),
        case(L, {"alpha": 2.5, "beta": 50.0, "base": 0.5}, mined=miner("MultiSimilarityMiner", epsilon=0.1)),
        case(L, {"alpha": 1.0, "beta": 4.0, "base": 1.2}, LP1, SUM, miner("BatchHardMiner", LP1),
             counts=(4, 4, 3, 1), d=5),
    ]
    # CircleLoss(m, gamma): CosineSimilarity only.
    L = "CircleLoss"
    C += [
        case(L, {"m": 0.25, "gamma": 64.0}),
        case(L, {"m": 0.5, "gamma": 32.0}, None, MEAN, counts=(3, 3, 3, 3), d=5),
        case(L, {"m": 0.1, "gamma": 128.0}, None, SUM, counts=(4, 4, 3, 1)),
        case(L, {"m": 0.3, "gamma": 16.0}, COS2, counts=(5, 5), d=4),
        case(L, {"m": 0.35, "gamma": 20.0}, None, NONZERO, counts=(4, 3, 3, 2), d=5),
        case(L, {"m": 0.2, "gamma": 40.0}, mined=miner("MultiSimilarityMiner", epsilon=0.1)),
        case(L, {"m": 0.3, "gamma": 50.0}, None, MEAN, miner("BatchEasyHardMiner", COS, pos_strategy="hard",
                                                             neg_strategy="semihard"), counts=(4, 4, 3, 1)),
        case(L, {"m": 0.45, "gamma": 10.0}, None, SUM,
             miner("TripletMarginMiner", COS, margin=0.2, type_of_triplets="hard")),
    ]
    # ProxyNCALoss(num_classes, embedding_size, softmax_scale).
    L = "ProxyNCALoss"
    C += [
        case(L, {"softmax_scale": 2.0}),
        case(L, {"softmax_scale": 0.5}, LP, SUM, counts=(3, 3, 3, 3), d=5),
        case(L, {"softmax_scale": 10.0}, COS, NONZERO, counts=(4, 4, 0, 4), d=5),
        case(L, {"softmax_scale": 3.0}, LP_RAW2, MEAN, counts=(5, 5, 0), d=4, scale=0.5),
        case(L, {"softmax_scale": 1.5}, DOT, counts=(4, 3, 3, 2), d=5),
        case(L, {"softmax_scale": 4.0}, LP1, counts=(3, 3, 3, 1, 0), d=8),
        case(L, {"softmax_scale": 2.0}, mined=miner("TripletMarginMiner", margin=0.2, type_of_triplets="semihard")),
        case(L, {"softmax_scale": 5.0}, None, MEAN, miner("PairMarginMiner", pos_margin=0.3, neg_margin=0.9),
             counts=(4, 4, 3, 1)),
    ]
    # ProxyAnchorLoss(num_classes, embedding_size, margin, alpha): two sub-losses.
    L = "ProxyAnchorLoss"
    C += [
        case(L, {"margin": 0.2, "alpha": 16.0}),
        case(L, {"margin": 0.05, "alpha": 64.0}, None, MEAN, counts=(3, 3, 3, 3), d=5),
        case(L, {"margin": 0.1, "alpha": 8.0}, None, SUM, counts=(4, 4, 0, 4), d=5),
        case(L, {"margin": 0.3, "alpha": 4.0}, LP, counts=(5, 5, 0), d=4),
        case(L, {"margin": 0.15, "alpha": 24.0}, DOT, NONZERO, counts=(4, 3, 3, 2, 0), d=5),
        case(L, {"margin": 0.1, "alpha": 2.0}, DOT_RAW, MEAN, counts=(3, 3, 3, 1), d=8, scale=0.5),
        case(L, {"margin": 0.2, "alpha": 12.0}, mined=miner("BatchHardMiner", COS)),
        case(L, {"margin": 0.12, "alpha": 20.0}, mined=miner("MultiSimilarityMiner", epsilon=0.15),
             counts=(4, 4, 3, 1, 0)),
    ]
    # ArcFaceLoss(num_classes, embedding_size, margin (degrees), scale): CosineSimilarity only.
    L = "ArcFaceLoss"
    C += [
        case(L, {"margin": 10.0, "scale": 16.0}),
        case(L, {"margin": 45.0, "scale": 8.0}, None, SUM, counts=(3, 3, 3, 3), d=5),
        case(L, {"margin": 60.0, "scale": 4.0}, None, NONZERO, counts=(4, 4, 0, 4), d=5),
        case(L, {"margin": 20.0, "scale": 30.0}, COS2, counts=(5, 5, 0), d=4),
        case(L, {"margin": 0.0, "scale": 2.0}, None, MEAN, counts=(4, 3, 3, 2, 0), d=5),
        case(L, {"margin": 35.0, "scale": 12.0}, counts=(3, 3, 3, 1), d=8),
        case(L, {"margin": 15.0, "scale": 20.0}, mined=miner("TripletMarginMiner", margin=0.3,
                                                             type_of_triplets="all"), counts=(3, 3, 3)),
        case(L, {"margin": 50.0, "scale": 6.0}, None, SUM,
             miner("PairMarginMiner", COS, pos_margin=0.2, neg_margin=0.6), counts=(4, 4, 3, 1)),
    ]
    # CosFaceLoss(num_classes, embedding_size, margin, scale): CosineSimilarity only.
    L = "CosFaceLoss"
    C += [
        case(L, {"margin": 0.1, "scale": 16.0}),
        case(L, {"margin": 0.5, "scale": 8.0}, None, SUM, counts=(3, 3, 3, 3), d=5),
        case(L, {"margin": 0.2, "scale": 30.0}, None, NONZERO, counts=(4, 4, 0, 4), d=5),
        case(L, {"margin": 0.25, "scale": 4.0}, COS2, counts=(5, 5, 0), d=4),
        case(L, {"margin": 0.0, "scale": 2.0}, None, MEAN, counts=(4, 3, 3, 2, 0), d=5),
        case(L, {"margin": 0.4, "scale": 12.0}, counts=(3, 3, 3, 1), d=8),
        case(L, {"margin": 0.3, "scale": 20.0}, mined=miner("BatchHardMiner")),
        case(L, {"margin": 0.15, "scale": 6.0}, None, SUM,
             miner("BatchEasyHardMiner", pos_strategy="easy", neg_strategy="easy"), counts=(4, 4, 3, 1)),
    ]
    # NPairsLoss(): no parameters; distances and reducers.
    L = "NPairsLoss"
    C += [
        case(L, {}, DOT_RAW, counts=(4, 4, 4), scale=0.5),
        case(L, {}, COS, SUM, counts=(3, 3, 3, 3), d=5),
        case(L, {}, LP, NONZERO, counts=(4, 3, 2, 1, 1), d=6),
        case(L, {}, LP2, MEAN, counts=(2, 2, 2, 2, 2), d=4),
        case(L, {}, None, SUM, counts=(5, 4, 2, 1), d=6),
        case(L, {}, LP1, counts=(3, 3, 3, 3), d=5),
        case(L, {}, mined=miner("PairMarginMiner", pos_margin=0.3, neg_margin=0.8), counts=(4, 4, 4, 2)),
        case(L, {}, None, NONZERO, miner("BatchHardMiner", DOT), counts=(4, 4, 3, 1), d=5),
    ]
    # LiftedStructureLoss(neg_margin, pos_margin).
    for L in ("LiftedStructureLoss", "GeneralizedLiftedStructureLoss"):
        gen = L.startswith("Generalized")
        C += [
            case(L, {"neg_margin": 0.8, "pos_margin": 0.1}),
            case(L, {"neg_margin": 1.5, "pos_margin": 0.2}, LP2, SUM, counts=(3, 3, 3, 3), d=5),
            case(L, {"neg_margin": 0.5, "pos_margin": 0.9}, COS, NONZERO, counts=(4, 4, 3, 1)),
            case(L, {"neg_margin": 3.0, "pos_margin": 0.5}, LP_RAW, MEAN, counts=(5, 5), d=4),
            case(L, {"neg_margin": 1.2, "pos_margin": 0.3}, LP1, counts=(4, 3, 3, 2), d=5),
            case(L, {"neg_margin": 0.2, "pos_margin": 1.0}, DOT_RAW, counts=(3, 3, 3, 1), d=8, scale=0.5),
            case(L, {"neg_margin": 1.1, "pos_margin": 0.3},
                 mined=(miner("MultiSimilarityMiner", LP, epsilon=0.2) if gen else
                        miner("PairMarginMiner", pos_margin=0.5, neg_margin=1.0))),
            case(L, {"neg_margin": 0.9, "pos_margin": 0.05}, None, MEAN,
                 (miner("TripletMarginMiner", margin=0.1, type_of_triplets="easy") if gen else
                  miner("BatchEasyHardMiner", pos_strategy="all", neg_strategy="hard")), counts=(4, 3, 3, 1)),
        ]
    # FastAPLoss(num_bins): LpDistance, normalised, p = 2, power 1 or 2.
    L = "FastAPLoss"
    C += [
        case(L, {"num_bins": 5}),
        case(L, {"num_bins": 20}, LP, SUM, counts=(3, 3, 3, 3), d=5),
        case(L, {"num_bins": 3}, None, NONZERO, counts=(4, 4, 3, 1)),
        case(L, {"num_bins": 15}, LP2, MEAN, counts=(5, 5), d=4),
        case(L, {"num_bins": 8}, LP, NONZERO, counts=(4, 3, 3, 2), d=5),
        case(L, {"num_bins": 12}, None, SUM, counts=(3, 3, 3, 1), d=8),
        case(L, {"num_bins": 6}, mined=miner("TripletMarginMiner", LP2, margin=0.2, type_of_triplets="all"),
             counts=(3, 3, 3)),
        case(L, {"num_bins": 4}, LP, None, miner("PairMarginMiner", pos_margin=0.8, neg_margin=1.3),
             counts=(4, 4, 3, 1)),
    ]
    return C


def miner_cases():
    C = []
    M = "BatchHardMiner"
    C += [
        case("TripletMarginLoss", {"margin": 0.3}, mined=miner(M), counts=(4, 4, 3, 1), name=M),
        case("ContrastiveLoss", {"pos_margin": 0.9, "neg_margin": 0.3}, COS, None, miner(M, COS), name=M),
        case("MarginLoss", {"margin": 0.2, "beta": 1.5}, LP2, None, miner(M, LP2), counts=(3, 3, 3, 3), d=5,
             name=M),
        case("NTXentLoss", {"temperature": 0.3}, mined=miner(M, DOT_RAW), counts=(4, 4, 3, 1), scale=0.5, name=M),
        case("MultiSimilarityLoss", {"alpha": 1.0, "beta": 10.0, "base": 0.6}, mined=miner(M, LP1),
             counts=(5, 5, 2), d=5, name=M),
        case("TripletMarginLoss", {"margin": 0.5}, LP_RAW, None, miner(M, LP_RAW), d=4, name=M),
    ]
    M = "BatchEasyHardMiner"
    C += [
        case("ContrastiveLoss", {"pos_margin": 0.1, "neg_margin": 1.2},
             mined=miner(M, allowed_pos_range=(0.6, 1.6)), counts=(4, 4, 3, 1), name=M),
        case("NTXentLoss", {"temperature": 0.2}, mined=miner(M, COS, pos_strategy="hard", neg_strategy="hard"),
             name=M),
        case("SupConLoss", {"temperature": 0.3}, LP2, None,
             miner(M, LP2, pos_strategy="easy", neg_strategy="easy", allowed_neg_range=(1.0, 3.5)),
             counts=(3, 3, 3, 3), d=5, name=M),
        case("TripletMarginLoss", {"margin": 0.2}, mined=miner(M, pos_strategy="semihard", neg_strategy="hard"),
             counts=(4, 4, 3, 1), name=M),
        case("CircleLoss", {"m": 0.3, "gamma": 32.0},
             mined=miner(M, COS, pos_strategy="hard", neg_strategy="semihard"), name=M),
        case("LiftedStructureLoss", {"neg_margin": 1.0, "pos_margin": 0.2},
             mined=miner(M, pos_strategy="all", neg_strategy="hard"), counts=(4, 4, 3, 1), d=5, name=M),
        case("MultiSimilarityLoss", {"alpha": 2.0, "beta": 20.0, "base": 0.4}, DOT, None,
             miner(M, DOT, pos_strategy="easy", neg_strategy="all"), counts=(3, 3, 2), d=5, name=M),
        case("ContrastiveLoss", {"pos_margin": 0.2, "neg_margin": 1.0},
             mined=miner(M, pos_strategy="hard", neg_strategy="easy", allowed_pos_range=(0.5, 1.8),
                         allowed_neg_range=(0.6, 1.7)), name=M),
        case("SupConLoss", {"temperature": 0.2},
             mined=miner(M, COS, pos_strategy="semihard", neg_strategy="easy", allowed_neg_range=(-0.6, 0.6)),
             counts=(4, 4, 3, 1), name=M),
    ]
    M = "TripletMarginMiner"
    C += [
        case("TripletMarginLoss", {"margin": 0.1}, mined=miner(M, margin=0.1, type_of_triplets="all"),
             counts=(3, 3, 3), d=5, name=M),
        case("ContrastiveLoss", {"pos_margin": 0.8, "neg_margin": 0.2}, COS, None,
             miner(M, COS, margin=0.3, type_of_triplets="hard"), counts=(3, 3, 2), d=5, name=M),
        case("MarginLoss", {"margin": 0.2, "beta": 1.5}, LP2, None,
             miner(M, LP2, margin=0.2, type_of_triplets="semihard"), counts=(4, 4, 3, 1), name=M),
        case("SupConLoss", {"temperature": 0.2}, mined=miner(M, margin=0.05, type_of_triplets="easy"),
             counts=(3, 3, 2), d=5, name=M),
        case("NTXentLoss", {"temperature": 0.5}, DOT_RAW, None,
             miner(M, DOT_RAW, margin=0.5, type_of_triplets="semihard"), scale=0.5, name=M),
        case("LiftedStructureLoss", {"neg_margin": 1.2, "pos_margin": 0.1}, LP1, None,
             miner(M, LP1, margin=0.4, type_of_triplets="hard"), counts=(4, 4, 3, 1), name=M),
        case("ArcFaceLoss", {"margin": 20.0, "scale": 10.0},
             mined=miner(M, COS, margin=0.25, type_of_triplets="easy"), counts=(3, 3, 2), d=5, name=M),
    ]
    M = "PairMarginMiner"
    C += [
        case("ContrastiveLoss", {"pos_margin": 0.2, "neg_margin": 0.9}, mined=miner(M, pos_margin=0.3,
                                                                                   neg_margin=1.0), name=M),
        case("NTXentLoss", {"temperature": 0.5}, mined=miner(M, COS, pos_margin=0.7, neg_margin=0.2),
             counts=(4, 4, 3, 1), name=M),
        case("MultiSimilarityLoss", {"alpha": 1.0, "beta": 5.0, "base": 1.5}, LP2, None,
             miner(M, LP2, pos_margin=1.0, neg_margin=1.8), counts=(3, 3, 3, 3), d=5, name=M),
        case("SupConLoss", {"temperature": 0.5}, LP_RAW, None,
             miner(M, LP_RAW, pos_margin=2.0, neg_margin=3.5), d=4, name=M),
        case("NPairsLoss", {}, mined=miner(M, DOT, pos_margin=0.5, neg_margin=0.0), counts=(4, 4, 3, 1), name=M),
        case("GeneralizedLiftedStructureLoss", {"neg_margin": 1.2, "pos_margin": 0.2}, LP1, None,
             miner(M, LP1, pos_margin=0.6, neg_margin=1.4), name=M),
    ]
    M = "MultiSimilarityMiner"
    C += [
        case("MultiSimilarityLoss", {"alpha": 2.0, "beta": 40.0, "base": 0.5}, mined=miner(M, epsilon=0.05),
             name=M),
        case("ContrastiveLoss", {"pos_margin": 0.1, "neg_margin": 1.0}, mined=miner(M, LP, epsilon=0.2),
             counts=(4, 4, 3, 1), name=M),
        case("NTXentLoss", {"temperature": 0.5}, DOT_RAW, None, miner(M, DOT_RAW, epsilon=0.5), scale=0.5,
             name=M),
        case("FastAPLoss", {"num_bins": 8}, mined=miner(M, LP2, epsilon=0.3), counts=(3, 3, 3, 3), d=5, name=M),
        case("CircleLoss", {"m": 0.3, "gamma": 64.0}, mined=miner(M, COS, epsilon=0.15), counts=(4, 4, 3, 1),
             name=M),
        case("SupConLoss", {"temperature": 0.2}, LP1, None, miner(M, LP1, epsilon=0.25), counts=(5, 5, 2),
             d=5, name=M),
    ]
    return C


# ---------------------------------------------------------------------------------------------------------
# Running PML


def load_pml():
    src = os.environ.get("KSHOT_PML_SRC")
    if not src:
        sys.exit("KSHOT_PML_SRC is not set: it must name the directory that contains pytorch_metric_learning/")
    if not os.path.isfile(os.path.join(src, "pytorch_metric_learning", "__init__.py")):
        sys.exit(f"no pytorch_metric_learning/__init__.py under {src}")
    sys.path.insert(0, src)
    import pytorch_metric_learning as pml
    if pml.__version__ != PEER_META["version"]:
        sys.exit(f"pytorch_metric_learning under {src} is {pml.__version__}, not {PEER_META['version']}")
    return pml


# File-name stems where PML's own module name is the more readable snake case of the class.
SNAKE = {"ArcFaceLoss": "arcface_loss", "CosFaceLoss": "cosface_loss", "NTXentLoss": "ntxent_loss",
         "SupConLoss": "supcon_loss"}


def snake(name):
    if name in SNAKE:
        return SNAKE[name]
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0 and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def py(v):
    """A value as Python source."""
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(py(x) for x in v) + ")"
    return repr(v)


def call(prefix, name, kw):
    return f"{prefix}.{name}(" + ", ".join(f"{k}={py(v)}" for k, v in kw.items()) + ")"


def jsonable(v):
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    return v


def distance_json(d):
    return {"type": type(d).__name__, "normalize_embeddings": bool(d.normalize_embeddings), "p": d.p,
            "power": d.power, "is_inverted": bool(d.is_inverted)}


def distance_text(d):
    return (f"{type(d).__name__}(p={d.p}, power={d.power}, normalize_embeddings={d.normalize_embeddings})"
            if type(d).__name__ == "LpDistance" else
            f"{type(d).__name__}(power={d.power}, normalize_embeddings={d.normalize_embeddings})")


def reducer_json(r, MultipleReducers):
    name = type(r).__name__
    if isinstance(r, MultipleReducers):
        subs = {k: {"type": type(v).__name__, "text": REDUCER_TEXT[type(v).__name__]} for k, v in r.reducers.items()}
        return {"type": name, "text": REDUCER_TEXT[name], "sub_losses": subs}
    return {"type": name, "text": REDUCER_TEXT[name]}


def tensor_json(t):
    t = t.detach().to("cpu")
    data = [float(x) for x in t.reshape(-1).tolist()]
    assert all(math.isfinite(x) for x in data), "non-finite value"
    return {"shape": list(t.shape), "data": data}


def indices_json(ix):
    import torch
    if ix is None:
        return None
    if torch.is_tensor(ix):
        return [[int(x) for x in ix.reshape(-1).tolist()]]
    return [[int(x) for x in torch.as_tensor(t).reshape(-1).tolist()] for t in ix]


def sub_losses_json(loss_dict):
    import torch
    out = {}
    for name, info in loss_dict.items():
        entry = {"reduction_type": info["reduction_type"]}
        losses = info["losses"]
        if not torch.is_tensor(losses):
            entry["losses"] = float(losses)
        elif info["reduction_type"] == "already_reduced" and losses.numel() == 1:
            entry["losses"] = float(losses.detach().reshape(-1)[0])
        else:
            entry["losses"] = tensor_json(losses)
        if info.get("indices") is not None:
            entry["indices"] = indices_json(info["indices"])
        if "divisor" in info:
            entry["divisor"] = float(info["divisor"])
        out[name] = entry
    return out


def make_distance(distances, spec):
    if spec is None:
        return None, None
    name, kw = spec
    return getattr(distances, name)(**kw), call("distances", name, kw)


def build_inputs(torch, spec, seed):
    g = torch.Generator().manual_seed(seed)
    counts = spec["counts"]
    n, d = sum(counts), spec["d"]
    assert 8 <= n <= 16 and 4 <= d <= 8, (n, d)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64) * spec["scale"]
    labels = torch.tensor([c for c, k in enumerate(counts) for _ in range(k)], dtype=torch.long)
    labels = labels[torch.randperm(n, generator=g)]
    return g, emb, labels


def run_case(pml, spec, seed):
    """(json dict, mined tuple as lists or None) for one seed."""
    import torch
    from pytorch_metric_learning import distances, losses, miners, reducers
    from pytorch_metric_learning.reducers import MultipleReducers

    cls = spec["cls"]
    g, emb0, labels = build_inputs(torch, spec, seed)
    n, d = emb0.shape
    classes = spec["num_classes"] or len(spec["counts"])

    # The loss.
    kw = dict(spec["kw"])
    if cls in PROXY_LOSSES or cls in W_LOSSES:
        kw = {"num_classes": classes, "embedding_size": d, **kw}
    ctor = dict(kw)
    api_kw = dict(kw)
    dist_obj, dist_call = make_distance(distances, spec["distance"])
    if dist_obj is not None:
        ctor["distance"] = dist_obj
    red_name = spec["reducer"]
    if red_name is not None:
        ctor["reducer"] = getattr(reducers, red_name)()
    loss_fn = getattr(losses, cls)(**ctor)
    api = call("losses", cls, api_kw)
    extra = []
    if dist_call:
        extra.append(f"distance={dist_call}")
    if red_name:
        extra.append(f"reducer=reducers.{red_name}()")
    if extra:
        api = api[:-1] + (", " if api_kw else "") + ", ".join(extra) + ")"

    params = dict(LOSS_PARAMS[cls])
    params.update(kw)
    if cls in PROXY_LOSSES or cls in W_LOSSES:
        params["num_classes"], params["embedding_size"] = classes, d
    if cls == "MarginLoss" and params["num_classes"] is None:
        del params["num_classes"]  # not passed: one shared beta
    params = {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) and k not in
                  ("num_classes", "embedding_size", "num_bins") else v) for k, v in params.items()}

    # Learnable parameters, set from the seed.
    inputs_extra, learned = {}, {}
    if cls in PROXY_LOSSES:
        loss_fn.proxies.data = torch.randn(classes, d, generator=g, dtype=torch.float64) * spec["scale"]
        learned["proxies"] = loss_fn.proxies
    if cls in W_LOSSES:
        loss_fn.W.data = torch.randn(d, classes, generator=g, dtype=torch.float64)
        learned["W"] = loss_fn.W
    if cls == "MarginLoss" and params.get("learn_beta"):
        size = len(loss_fn.beta)
        loss_fn.beta.data = spec["beta_center"] + 0.4 * (torch.rand(size, generator=g, dtype=torch.float64) - 0.5)
        learned["beta"] = loss_fn.beta
    for k, p in learned.items():
        assert p.dtype == torch.float64 and p.requires_grad
        inputs_extra[k] = tensor_json(p)

    # The miner, on the same embeddings, without gradients.
    miner_json, tuple_lists, mined = None, None, None
    if spec["miner"] is not None:
        mname, mkw, mdist = spec["miner"]
        mdist_obj, mdist_call = make_distance(distances, mdist)
        mctor = dict(mkw)
        if mdist_obj is not None:
            mctor["distance"] = mdist_obj
        miner_fn = getattr(miners, mname)(**mctor)
        with torch.no_grad():
            mined = miner_fn(emb0, labels)
        tuple_lists = [[int(x) for x in t.tolist()] for t in mined]
        mapi = call("miners", mname, mkw)
        if mdist_call:
            mapi = mapi[:-1] + (", " if mkw else "") + f"distance={mdist_call})"
        mparams = dict(MINER_PARAMS[mname])
        mparams.update(mkw)
        miner_json = {"api": mapi, "distance": distance_json(miner_fn.distance),
                      "params": {k: jsonable(v) for k, v in mparams.items()}}
        api = api + " + " + mapi
        miner_fn_ref = (miner_fn, mname)
    else:
        miner_fn_ref = None

    # The loss, its gradients, and the elements handed to the reducer.
    captured = []
    hook = loss_fn.reducer.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    emb = emb0.clone().requires_grad_(True)
    value = loss_fn(emb, labels, mined) if mined is not None else loss_fn(emb, labels)
    value.backward()
    hook.remove()
    assert len(captured) == 1
    grad = {"embeddings": tensor_json(emb.grad if emb.grad is not None else torch.zeros_like(emb))}
    for k, p in learned.items():
        grad[k] = tensor_json(p.grad if p.grad is not None else torch.zeros_like(p))

    inputs = {"embeddings": tensor_json(emb0), "labels": [int(x) for x in labels.tolist()]}
    if tuple_lists is not None:
        inputs["indices_tuple"] = tuple_lists
    inputs.update(inputs_extra)

    red = reducer_json(loss_fn.reducer, MultipleReducers)
    out = {
        "case": None,
        "peer": PEER,
        "peer_meta": PEER_META,
        "api": api,
        "params": params,
        "distance": distance_json(loss_fn.distance),
        "reducer": red,
    }
    if miner_json is not None:
        out["miner"] = miner_json
    out.update({
        "seed": seed,
        "dtype": "float64",
        "inputs": inputs,
        "loss": float(value.detach()),
        "grad": grad,
        "outputs": {"sub_losses": sub_losses_json(captured[0])},
        "notes": None,
        "torch": torch.__version__,
    })
    out["notes"] = notes_of(spec, out, loss_fn, miner_json, learned)
    return out, miner_fn_ref, emb0, labels


def notes_of(spec, out, loss_fn, miner_json, learned):
    red = out["reducer"]
    if red["type"] == "MultipleReducers":
        parts = ", ".join(f"{k}: {v['type']}" for k, v in red["sub_losses"].items())
        red_text = f"one reducer per sub-loss ({parts}), summed"
    else:
        red_text = red["type"]
    counts = spec["counts"]
    label_text = f"{sum(counts)} x {spec['d']} standard-normal embeddings"
    if spec["scale"] != 1.0:
        label_text += f" times {spec['scale']}"
    label_text += f", class sizes {counts}"
    over = (f"over the tuple that {miner_json['api']} mined on the same embeddings under no_grad "
            f"(inputs.indices_tuple, passed to the loss)" if miner_json else "over every tuple of the labels")
    learn = ""
    if learned:
        learn = (" with " + " and ".join(sorted(learned)) + " drawn from the seed instead of PML's "
                 "initialisation (their gradients in grad)")
    return (f"PML 2.8.1 {out['api'].split(' + ')[0]} with {distance_text(loss_fn.distance)} and {red_text}, "
            f"{over}, on {label_text}{learn}; loss and gradients from PyTorch autograd in float64.")


def mining_is_stable(torch, miner_ref, emb, labels, trials=6, rel=1e-7):
    """False when a tiny perturbation of the embeddings changes the mined tuple (a tie or a threshold
    within rounding), so that the case would depend on the last bits of the distances."""
    miner_fn, _ = miner_ref
    g = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        base = [sorted(zip(*[t.tolist() for t in miner_fn(emb, labels)]))]
        for _ in range(trials):
            noisy = emb + rel * emb.abs().max() * torch.randn(emb.shape, generator=g, dtype=emb.dtype)
            got = sorted(zip(*[t.tolist() for t in miner_fn(noisy, labels)]))
            if got != base[0]:
                return False
    return True


def tuple_ok(tuple_lists):
    """The mined tuple has something in every list (an empty tuple makes the loss trivially 0)."""
    if len(tuple_lists) == 3:
        return len(tuple_lists[0]) >= 2
    return len(tuple_lists[0]) >= 2 and len(tuple_lists[2]) >= 2


# ---------------------------------------------------------------------------------------------------------
# Writing


def dump(o, indent=0):
    """JSON with one key per line and lists of numbers on one line (keeps the files small)."""
    pad = " " * (indent + 1)
    if isinstance(o, dict):
        if not o:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in o.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(o, list):
        return "[" + ", ".join(dump(x, indent + 1) for x in o) + "]"
    if isinstance(o, float):
        assert math.isfinite(o)
        return repr(o)
    return json.dumps(o)


def check_signatures(losses, miners):
    import inspect

    def names(cls):
        out = set()
        for k in inspect.getmro(cls):
            if "__init__" in k.__dict__:
                out |= set(inspect.signature(k.__init__).parameters)
        return out

    for cls, params in LOSS_PARAMS.items():
        missing = set(params) - names(getattr(losses, cls))
        assert not missing, f"{cls} has no parameter {missing}"
    for cls, params in MINER_PARAMS.items():
        missing = set(params) - names(getattr(miners, cls))
        assert not missing, f"{cls} has no parameter {missing}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    flt = sys.argv[2] if len(sys.argv) > 2 else None
    pml = load_pml()
    import torch
    from pytorch_metric_learning import losses, miners

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    check_signatures(losses, miners)

    specs = loss_cases() + miner_cases()
    names, k_of = [], {}
    for s in specs:
        k_of[s["name"]] = k_of.get(s["name"], 0) + 1
        names.append(f"pml_gen_{snake(s['name'])}_{k_of[s['name']]}")
    if flt is None:
        for f in os.listdir(out_dir):
            if f.startswith("pml_gen_") and f.endswith(".json"):
                os.remove(os.path.join(out_dir, f))

    total, written, errors = 0, 0, []
    for name, spec in zip(names, specs):
        if flt is not None and flt not in name:
            continue
        seed = zlib.crc32(name.encode()) & 0x7FFFFFFF
        for attempt in range(50):
            out, miner_ref, emb, labels = run_case(pml, spec, seed)
            ok = out["loss"] != 0.0
            if miner_ref is not None:
                ok = ok and tuple_ok(out["inputs"]["indices_tuple"]) and mining_is_stable(torch, miner_ref, emb,
                                                                                         labels)
            if ok:
                break
            seed += 1
        else:
            sys.exit(f"{name}: no usable seed")
        out["case"] = name
        text = dump(out) + "\n"
        json.loads(text)
        size = len(text.encode())
        if size > MAX_FILE_BYTES:
            errors.append(f"{name}: {size} bytes, more than {MAX_FILE_BYTES} (not written)")
            print(errors[-1])
            continue
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            f.write(text)
        total += size
        written += 1
        print(f"{name}: {out['api']}  loss {out['loss']:.6g}  seed {seed}  {size} B")
    print(f"{written} cases, {total} bytes")
    if errors:
        sys.exit("\n".join(errors))


if __name__ == "__main__":
    main()
