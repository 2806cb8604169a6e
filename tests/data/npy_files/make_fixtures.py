#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the .npy fixtures of tests/interop/test_io.cpp with NumPy itself.

Run from anywhere with Debian's Python, which has NumPy (python3-numpy):

    /usr/bin/python3 tests/data/npy_files/make_fixtures.py

The files are tiny and committed; the test asserts the exact values written here.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, array):
    np.save(os.path.join(HERE, name), array, allow_pickle=False)


# float32, 2 x 3, C order.
save("f32_2x3.npy", np.array([[1.5, -2.25, 3.0], [0.1, 1e-3, -7.0]], dtype="<f4"))
# float64, 4 x 1 (one column: C and Fortran order coincide).
save("f64_4x1.npy", np.array([[0.1], [-2.5], [1e300], [3.141592653589793]], dtype="<f8"))
# int64 labels, 1-D.
save("labels_i64.npy", np.array([3, 0, 7, 2, 2147483647, -5], dtype="<i8"))
# uint8 labels, 1-D.
save("labels_u8.npy", np.array([0, 1, 255, 9], dtype="|u1"))
# float32 2 x 3 in Fortran order: the same values as f32_2x3.npy, stored column by column.
save("fortran_f32_2x3.npy", np.asfortranarray(np.array([[1.5, -2.25, 3.0], [0.1, 1e-3, -7.0]], dtype="<f4")))
# big-endian float32, 2 x 2.
save("be_f4_2x2.npy", np.array([[1.0, -2.0], [0.5, 1e10]], dtype=">f4"))
# float32, 3-D.
save("f32_2x2x2.npy", np.arange(8, dtype="<f4").reshape(2, 2, 2))
