"""Fits the polynomials of kernels/cpu/vec_math.h (Note [f32 lane math]) and prints each one's
coefficients, rounded to float as the header holds them, with its worst error on the interval.
    build/torch-venv/bin/python bench/fit_vec_math.py
Near-minimax fits by Lawson's iteration (least squares reweighted by the error) on Chebyshev
nodes; mpmath gives erfc's reference. Not run by any build or test.
"""
import math

import mpmath
import numpy as np

mpmath.mp.dps = 30


def lawson(f, powers_of, lo, hi, n, relative=True, points=4000, iterations=300, weight=None):
    """Coefficients c of sum c_k v(x)^k (k in n, v = powers_of) fitting f on [lo, hi], and the worst
    error: relative to f, or absolute, or relative to weight(x)."""
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.linspace(0, np.pi, points))
    y, v = f(x), powers_of(x)
    a = np.stack([v ** k for k in n], 1)
    scale = weight(x) if weight else (np.abs(y) if relative else np.ones_like(y))
    w = np.ones_like(x) / len(x)
    for _ in range(iterations):
        sw = np.sqrt(w) / scale
        c, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
        e = np.abs(a @ c - y) / scale
        w = w * e
        w /= w.sum()
    return c, e.max()


def show(name, c, err):
    print(f"{name}: worst error {err:.2e}\n  " + ", ".join(f"{float(np.float32(v))!r}f" for v in c))


h = math.log(2) / 2 * 1.002  # exp: e^r = 1 + r + r^2 P(r), |r| <= ln2 / 2; error relative to e^r
c, e = lawson(lambda r: np.expm1(r) - r, lambda r: r, -h, h, range(2, 7), weight=np.exp)
show("exp P (r^2..r^6), error relative to e^r", c, e)
h = math.pi / 2 + 0.03  # sin r = r + r^3 P(r^2); sin r / r - 1 is sin's relative error
c, e = lawson(lambda r: np.sin(r) / r - 1, lambda r: r, 1e-4, h, range(2, 10, 2), relative=False)
show("sin P (r^2..r^8)", c, e)
c, e = lawson(np.vectorize(math.erf), lambda x: x, 1e-5, 0.5005, range(1, 11, 2))
show("erf small (x..x^9)", c, e)
ratio = np.vectorize(lambda t: float(mpmath.erfc(t) * mpmath.exp(mpmath.mpf(t) ** 2)))
c, e = lawson(ratio, lambda t: 1 / (1 + 0.5 * t), 0.499, 10.3, range(10), points=3000, iterations=200)
show("erfc ratio R(t) = erfc(t) e^(t^2) in u = 1/(1 + t/2)", c, e)
c, e = lawson(lambda f: np.sin(2 * np.pi * f), lambda f: f, 1e-5, 0.1251, range(1, 9, 2), points=3000)
show("sin(2 pi f), |f| <= 1/8", c, e)
c, e = lawson(lambda f: np.cos(2 * np.pi * f) - 1, lambda f: f, 0, 0.1251, range(2, 10, 2), relative=False, points=3000)
show("cos(2 pi f) - 1, |f| <= 1/8", c, e)
