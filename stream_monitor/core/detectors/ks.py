"""Two-sample Kolmogorov–Smirnov test against a presorted reference sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

__all__ = ["ks_2samp_sorted", "ks_2samp_sorted_many"]


def ks_2samp_sorted(ref_sorted: npt.ArrayLike, sample: npt.ArrayLike) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value, with the reference already sorted.

    The statistic is ``D = max |F_ref(x) - F_win(x)|`` over all observed ``x``, with both empirical
    CDFs right-continuous as in ``scipy.stats.ks_2samp``, so ties are handled the same way. Only the
    window sample is sorted here and then merged with the reference, which is sorted once, when
    the profile is built. NaNs in ``sample`` are dropped (missing values are the integrity
    checks' business); ``ref_sorted`` must be sorted and finite.

    The p-value is Smirnov's: ``scipy.stats.kstwo.sf(D, round(n1 * n2 / (n1 + n2)))`` — the same
    number as ``scipy.stats.ks_2samp(..., method="asymp")``. It is accurate for the window sizes we
    use (hundreds and up) and avoids the exact method's cost. An empty side gives ``(nan, nan)``.

    As n grows the p-value goes to 0 for any real difference however small; decide drift with
    :func:`stream_monitor.core.detectors.multiple_testing.significant_drift`, which also asks for
    ``D >= min_effect``.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> ref = np.sort(rng.normal(0, 1, 5000))
    >>> d, p = ks_2samp_sorted(ref, rng.normal(0, 1, 2000))
    >>> round(d, 4), round(p, 3)
    (0.0164, 0.831)
    >>> d, p = ks_2samp_sorted(ref, rng.normal(0.3, 1, 2000))
    >>> round(d, 4), p < 1e-10
    (0.1388, True)

    """
    statistics, p_values = ks_2samp_sorted_many([ref_sorted], [sample])
    return float(statistics[0]), float(p_values[0])


def _statistics(
    ref_sorted: Sequence[npt.ArrayLike], samples: Sequence[npt.ArrayLike]
) -> tuple[np.ndarray, np.ndarray]:
    """The KS statistic and Smirnov's effective n of each (sorted reference, sample) pair; NaN for a
    pair with an empty side. NaNs in the samples are dropped."""
    statistics = np.full(len(samples), np.nan)
    effective_n = np.full(len(samples), np.nan)
    refs = [np.asarray(r, dtype=np.float64) for r in ref_sorted]
    wins = []
    for sample in samples:
        win = np.asarray(sample, dtype=np.float64)
        missing = np.isnan(win)
        wins.append(win[~missing] if missing.any() else win)
    # Pairs of the same sizes are rows of one matrix: one sort and one comparison of the CDFs for all
    # (per-call overhead, not arithmetic, was most of a small window's KS time).
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (ref, win) in enumerate(zip(refs, wins, strict=True)):
        if ref.size and win.size:
            groups.setdefault((ref.size, win.size), []).append(i)
    for (n_ref, n_win), rows in groups.items():
        win = np.sort(np.stack([wins[i] for i in rows]), axis=1)
        # D is the largest gap between the two right-continuous empirical CDFs over every observed
        # value. Where the window's CDF is flat (between two window values) the reference's only
        # rises, so the largest gap lies at a window value (right limit: counts <= x) or just before
        # one (left limit: counts < x, the right limit at the previous observed value). Binary
        # searches of the window's values find both; sorting the two samples merged cost
        # O(n_ref log n_ref) per window. Each gap is the same ``count / n_ref - count / n_win`` as at
        # that value of the merged samples (ties jump by the whole tie, as in scipy): the same D.
        ref_right = np.stack(
            [np.searchsorted(refs[i], w, side="right") for i, w in zip(rows, win, strict=True)]
        )
        ref_left = np.stack(
            [np.searchsorted(refs[i], w, side="left") for i, w in zip(rows, win, strict=True)]
        )
        own_right = np.tile(np.arange(1, n_win + 1), (len(rows), 1))
        own_left = own_right - 1
        for t in np.flatnonzero((win[:, 1:] == win[:, :-1]).any(axis=1)).tolist():  # ties in the window
            own_right[t] = np.searchsorted(win[t], win[t], side="right")
            own_left[t] = np.searchsorted(win[t], win[t], side="left")
        right = np.abs(ref_right / n_ref - own_right / n_win).max(axis=1)
        left = np.abs(ref_left / n_ref - own_left / n_win).max(axis=1)
        statistics[rows] = np.maximum(right, left)
        big, small = max(n_ref, n_win), min(n_ref, n_win)
        effective_n[rows] = float(np.round(big * small / (big + small)))
    return statistics, effective_n


def ks_2samp_sorted_many(
    ref_sorted: Sequence[npt.ArrayLike], samples: Sequence[npt.ArrayLike]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ks_2samp_sorted` for many features: arrays of statistics and p-values, one per pair.

    Pairs of the same sizes are computed together; the p-values are
    ``scipy.stats.kstwo.sf`` bit for bit, most of them computed here (:func:`kolmogorov_sf`).

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> refs = [np.sort(rng.normal(0, 1, 3000)), np.sort(rng.uniform(0, 1, 3000))]
    >>> statistics, p_values = ks_2samp_sorted_many(refs, [rng.normal(0, 1, 500), rng.uniform(0.2, 1, 500)])
    >>> statistics.round(3), p_values < 1e-6
    (array([0.035, 0.216]), array([False,  True]))

    """
    if len(ref_sorted) != len(samples):
        raise ValueError(f"{len(ref_sorted)} reference samples but {len(samples)} window samples")
    statistics, effective_n = _statistics(ref_sorted, samples)
    p_values = np.full(statistics.shape, np.nan)
    valid = ~np.isnan(statistics)
    if valid.any():
        p_values[valid] = np.clip(kolmogorov_sf(statistics[valid], effective_n[valid]), 0.0, 1.0)
    return statistics, p_values


# scipy.stats._ksstats' constants, written the same way so that they are the same doubles.
_PI_SQUARED = np.pi**2
_PI_FOUR = np.pi**4
_PI_SIX = np.pi**6
_SQRT2PI = float(np.sqrt(2 * np.pi))
_SQRT3 = float(np.sqrt(3.0))
_MIN_LOG = -708


def kolmogorov_sf(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``scipy.stats.kstwo.sf(d, n)``: the same doubles, about ten times faster on a window's KS tests.

    scipy evaluates its ``_kolmogn`` one value at a time in Python (~60 µs each, plus ~0.5 ms per
    call): 2.3 ms of every window, most of a small window's cost. For ``n > 140`` the cases a window
    meets are computed here, with scipy's formulas and operations in scipy's order — the survival
    function ``2 · smirnov(n, d)`` once ``n·d² >= 2.2``, 0 beyond 370, and Pelz–Good's approximation
    below 2.2 (the no-drift case) or Durbin's matrix where scipy uses it (``n·d^1.5 <= 1.4``, a
    distance of almost nothing); for any ``n``, ``2 · smirnov(n, d)`` for ``0.5 <= d < 1`` and 0
    from ``d >= 1`` (scipy's exact branches). The rest (small ``n`` and ``d``, ``d`` within ``1/n``
    of 0 or 1, Durbin's matrix for very small ``d``) goes to scipy. ``tests/test_detectors_ks.py``
    checks equality with ``kstwo.sf``.

    >>> from scipy import stats
    >>> d, n = np.array([0.05, 0.2, 0.01, 0.3]), np.array([340.0, 340.0, 340.0, 50.0])
    >>> bool(np.array_equal(kolmogorov_sf(d, n), stats.kstwo.sf(d, n)))
    True
    """
    d = np.asarray(d, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    out = np.empty(d.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        t = n * d
        nxsquared = t * d
        whole = (n > 0) & (n == np.floor(n))
        ours = (n > 140) & whole & (d > 0.0) & (d < 0.5) & (t > 1.0) & (t < n - 1)
        # scipy's exact branches for a large distance (any n), which a strong drift meets: without
        # them the first such window imported scipy.stats inside the stream (~1 s on a 2-core
        # machine: the first trigger after every start was that late, BENCHMARKS.md section 13).
        separated = whole & (d >= 1.0)
        far = whole & (d >= 0.5) & (d < 1.0) & (t > 1.0) & (t < n - 1)
        zero = separated | (ours & (nxsquared >= 370.0))
        smirnov = far | (ours & ~zero & (nxsquared >= 2.2))
        durbin = ours & (nxsquared < 2.2) & (n <= 100000) & (n * d**1.5 <= 1.4)
        pelz_good = ours & (nxsquared < 2.2) & ~durbin
    out[zero] = 0.0
    if smirnov.any():
        out[smirnov] = np.clip(2 * special.smirnov(n[smirnov].astype(np.int64), d[smirnov]), 0.0, 1.0)
    if pelz_good.any():
        out[pelz_good] = np.clip(1.0 - np.array(_pelz_good_cdf(n[pelz_good], d[pelz_good])), 0.0, 1.0)
    if durbin.any():
        # A very small distance (no drift at all): Durbin's matrix, one value at a time as scipy
        # (whose intermediate powers may overflow to inf, as here).
        with np.errstate(over="ignore", invalid="ignore"):
            cdf = [_durbin_cdf(int(ni), np.float64(di)) for ni, di in zip(n[durbin], d[durbin], strict=True)]
        out[durbin] = [np.clip(1.0 - c, 0.0, 1.0) for c in cdf]
    rest = ~(zero | smirnov | pelz_good | durbin)
    if rest.any():
        from scipy import stats  # only here: scipy.stats costs ~0.4 s and 46 MB to import

        out[rest] = stats.kstwo.sf(d[rest], n[rest])
    return out


# scipy.stats._ksstats' scaling constants (a long double, as there: the results depend on it).
_E128 = 128
_EP128 = np.ldexp(np.longdouble(1), _E128)
_EM128 = np.ldexp(np.longdouble(1), -_E128)


def _durbin_cdf(n: int, d: np.float64) -> Any:
    """scipy's ``_kolmogn_DMTW(n, d, cdf=True)`` (Durbin's matrix, Marsaglia–Tsang–Wang), the same
    operations on the same types (scipy is BSD-licensed; this is its code), for ``n·d > 1``, ``d < 1``.

    A window with no drift at all meets it (``n·d^1.5 <= 1.4``): without it, that window imported
    scipy.stats inside the stream (~1 s once per process on a 2-core machine)."""
    nd = n * d
    k = int(np.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    H = np.zeros([m, m])
    intm = np.arange(1, m + 1)
    v = 1.0 - h**intm
    w = np.empty(m)
    fac: Any = 1.0
    for j in intm:
        w[j - 1] = fac
        fac /= j
        v[j - 1] *= fac
    tt = max(2 * h - 1.0, 0) ** m - 2 * h**m
    v[-1] = (1.0 + tt) * fac
    for i in range(1, m):
        H[i - 1 :, i] = w[: m - i + 1]
    H[:, 0] = v
    H[-1, :] = np.flip(v, axis=0)
    Hpwr = np.eye(np.shape(H)[0])
    nn = n
    expnt = 0
    Hexpnt = 0
    while nn > 0:
        if nn % 2:
            Hpwr = np.matmul(Hpwr, H)
            expnt += Hexpnt
        H = np.matmul(H, H)
        Hexpnt *= 2
        if np.abs(H[k - 1, k - 1]) > _EP128:
            H /= _EP128
            Hexpnt += _E128
        nn = nn // 2
    p: Any = Hpwr[k - 1, k - 1]
    for i in range(1, n + 1):
        p = i * p / n
        if np.abs(p) < _EM128:
            p *= _EP128
            expnt -= _E128
    if expnt != 0:
        p = np.ldexp(p, expnt)
    return np.clip(np.where(True, p, 1.0 - p), 0.0, 1.0)


def _pelz_good_cdf(n: np.ndarray, x: np.ndarray) -> list[float]:
    """scipy's ``_kolmogn_PelzGood(n, x, cdf=True)`` for ``1 < n·x``, ``n·x² < 2.2`` (so ``z < 1.49``).

    The exponentials and powers of ``q`` are numpy's, vectorised (numpy's exp and power give the
    same doubles on one value as on many); powers of ``z`` are libm's ``pow``, as numpy computes them
    on scipy's scalars; the rest is IEEE arithmetic on Python floats in scipy's order. With
    ``z < 1.49`` the sums have at most 8 terms, which numpy adds one by one after the first.
    """
    z = np.sqrt(n) * x
    zs = z.tolist()
    squares = [math.pow(v, 2) for v in zs]
    zsq = np.array(squares)
    maxk = np.ceil(16 * z / np.pi).astype(np.int64)
    top = int(maxk.max())
    q = np.exp(-_PI_SQUARED / 8 / zsq)
    q_powers = [np.power(q, 8 * k).tolist() for k in range(top + 1)]
    ks = np.arange(top, 0, -1)
    # Column j is q2 ** ks[j]², as scipy's ``q ** ksquared`` per value.
    q2_powers = (np.exp(-_PI_SQUARED / 2 / zsq)[:, None] ** (ks**2)).tolist()
    n_powers = {size: np.power(size * 1.0, np.arange(4) / 2.0).tolist() for size in set(n.tolist())}
    k1b = _PI_SQUARED / 4
    out = []
    rows = zip(zs, squares, q.tolist(), n.tolist(), maxk.tolist(), strict=True)
    for i, (zi, zsquared, qi, ni, mk) in enumerate(rows):
        zthree, zfour, zsix = math.pow(zi, 3), math.pow(zi, 4), math.pow(zi, 6)
        if -_PI_SQUARED / 8 / zsquared < _MIN_LOG:  # scipy: q underflows, the CDF is 0
            out.append(0.0)
            continue
        k1a = -zsquared
        k2a = 6 * zsix + 2 * zfour
        k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
        k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
        k3d = _PI_SIX * (5 - 30 * zsquared) / 64
        k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
        k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
        k3a = -30 * zsix - 90 * math.pow(zi, 8)
        t0 = t1 = t2 = t3 = 0.0
        for k in range(mk, 0, -1):  # Horner in q^(8k), as scipy
            m = 2 * k - 1
            msquared, mfour, msix = m**2, m**4, m**6
            qpower = q_powers[k][i]
            t0 = t0 * qpower + 1.0
            t1 = t1 * qpower + (k1a + k1b * msquared)
            t2 = t2 * qpower + (k2a + k2b * msquared + k2c * mfour)
            t3 = t3 * qpower + (k3a + k3b * msquared + k3c * mfour + k3d * msix)
        t0, t1, t2, t3 = (v * qi * _SQRT2PI for v in (t0, t1, t2, t3))
        t0 /= zi
        t1 /= 6 * zfour
        t2 /= 72 * math.pow(zi, 7)
        t3 /= 6480 * math.pow(zi, 10)
        # ks = mk … 1 (the last mk columns); numpy's sum: the first term, then the others in order.
        sqrt3z = _SQRT3 * zi
        k2terms, k3terms = [], []
        for k, qpwer in zip(range(mk, 0, -1), q2_powers[i][top - mk :], strict=True):
            ksquared = k * k
            kspi = np.pi * k
            k2terms.append(ksquared * qpwer)
            k3terms.append((sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwer)
        k2extra = k2terms[0] + _sequential(k2terms[1:])
        k3extra = k3terms[0] + _sequential(k3terms[1:])
        t2 += k2extra * (_PI_SQUARED * _SQRT2PI / (-36 * zthree))
        t3 += k3extra * (_PI_SQUARED * _SQRT2PI / (216 * zsix))
        p0, p1, p2, p3 = n_powers[ni]
        out.append(t0 / p0 + t1 / p1 + t2 / p2 + t3 / p3)
    return out


def _sequential(values: list[float]) -> float:
    """Left to right, as numpy adds fewer than 8 values (``sum()`` compensates floats from 3.12 on)."""
    total = 0.0
    for v in values:
        total += v
    return total
