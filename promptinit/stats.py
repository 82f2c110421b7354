"""How sure a comparison with prompt tuning is: paired differences, a hierarchical bootstrap, an exact test.

Every (target task, few-shot seed) pair gives one PT score and, per upstream seed (one
meta-trained prompt each), one score of the method: a *cell* is one (task, few-shot seed,
upstream seed) score. ``compare`` reports

- the mean **absolute** difference in points (headline), ARG, and P(>PT) (the share of cells
  the method wins, ties counting half), each averaged over tasks, each with a 95 % percentile
  interval from a hierarchical bootstrap (``hierarchical_bootstrap``): the upstream seeds are
  resampled once per replicate and shared by all tasks (they are the same meta-trained
  prompts), then the few-shot seeds within each task (tasks are strata and keep their weight),
  and the statistic is computed on that two-stage resample. A plain two-stage bootstrap
  undercovers with 3 upstream seeds, so the deviations are corrected: each level is rescaled
  (Rao and Wu 1988) and the whole deviation is widened by Student's t over the normal quantile
  at the Welch-Satterthwaite degrees of freedom of the two levels;
- a two-sided Wilcoxon signed-rank test (``signed_rank_test``) of the per-pair differences, on
  exact integers when the scores are shares of ``n_test`` test examples (accuracy, exact match);
- a verdict (``verdict``): "better than PT" or "worse than PT" when the difference's interval
  lies wholly above or below 0, "equivalent to PT within δ points" when it holds 0 and lies
  between -δ and +δ (``delta``, default 2 points), else "undetermined: interval too wide". (The
  tables print no "±": a cell is ``mean [lo, hi]``, never a mean ± a spread.)

``holm`` adjusts the p-values of a table of several comparisons (Holm 1979). Relative gains
divide by PT's score clamped at ``MIN_BASELINE``; pairs whose baseline is below ``LOW_BASELINE``
are counted, because one of them can move ARG by hundreds of percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

MIN_BASELINE = 0.01  # RG denominators are clamped here (a guard against 0, not a fix)
LOW_BASELINE = 0.05  # a PT score below this makes a relative gain unreliable
RESAMPLES = 4000
LEVEL = 0.95
DELTA = 0.02  # equivalence margin: an interval in [-2, +2] points that holds 0 reads "equivalent"
EXACT_FLIPS = 16  # with ties or zeros, up to this many differences the test enumerates all 2^n sign flips (< 1 s)
WHOLE = 1e-6  # a score x its test size must be this close to a whole number of examples

TOO_WIDE = "undetermined: interval too wide"  # the interval holds 0 and reaches past -δ or +δ
NOT_AFTER_HOLM = "not after Holm"  # appended to a verdict whose effect does not survive Holm's adjustment


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (same unit)."""

    mean: float
    lo: float
    hi: float

    @property
    def holds_zero(self) -> bool:
        return self.lo <= 0.0 <= self.hi

    def within(self, delta: float) -> bool:
        """The whole interval lies in [-delta, +delta]."""
        return -delta <= self.lo and self.hi <= delta

    def fmt(self, scale: float = 100.0, digits: int = 1, signed: bool = True) -> str:
        """``+3.1 [−0.8, +7.0]`` (values times ``scale``)."""
        if not math.isfinite(self.mean):
            return "n/a"
        f = (lambda x: _signed(scale * x, digits)) if signed else (lambda x: f"{scale * x:.{digits}f}")
        return f"{f(self.mean)} [{f(self.lo)}, {f(self.hi)}]"


def _signed(x: float, digits: int) -> str:
    text = f"{x:+.{digits}f}"
    return text.replace("-", "\u2212")


def equivalent(delta: float = DELTA, than: str = "PT") -> str:
    """The verdict of an interval that holds 0 and lies in [-delta, +delta]: ``equivalent to PT within 2 points``."""
    return f"equivalent to {than} within {100 * delta:g} points"


def verdict(interval: Interval, delta: float = DELTA, than: str = "PT") -> str:
    """What a difference's interval says, in the words of every table.

    Args:
        interval: the difference (method minus ``than``; fractions, x100 = points).
        delta: the equivalence margin (fraction; 0.02 = 2 points).
        than: what the method is compared with.

    Returns:
        ``better than PT`` (wholly above 0), ``worse than PT`` (wholly below 0), ``equivalent to
        PT within 2 points`` (holds 0, in [-delta, +delta]) or ``undetermined: interval too wide``.
    """
    if interval.lo > 0:
        return f"better than {than}"
    if interval.hi < 0:
        return f"worse than {than}"
    return equivalent(delta, than) if interval.within(delta) else TOO_WIDE


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order.

    With the m finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted
    p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)). NaN stays NaN and is not counted in m.
    An effect survives at level alpha when its adjusted p is below alpha; the family-wise error
    rate is then at most alpha, whatever the dependence between the tests.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    running = 0.0
    for i, j in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (len(finite) - i) * p[j]))
        out[j] = running
    return out.tolist()


def signed_rank_test(d) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank test of paired differences (``scipy.stats.wilcoxon``).

    Zeros follow Pratt (1959): they are ranked with the other differences and their ranks are
    then dropped, so every nonzero difference keeps the rank it has in the data (Wilcoxon's own
    rule drops the zeros first and re-ranks the rest). The p-value is exact wherever it can be:

    - no ties and no zeros, up to 50 differences: scipy's exact null distribution
      (``method="exact"``);
    - ties or zeros, up to ``EXACT_FLIPS`` differences: the exact conditional null, all 2^n
      sign flips enumerated (``scipy.stats.permutation_test`` of Pratt's rank sum, vectorised;
      what ``wilcoxon(method=PermutationMethod(n_resamples=2**n))`` computes, without its
      per-permutation loop); scipy's ``method="exact"`` is not exact with ties;
    - more: the normal approximation with the tie and zero corrections (Cureton 1967),
      ``method="asymptotic"``.

    Ties are only ties when the differences are exact, which is why ``compare`` passes integers.

    Args:
        d: the differences (integers, or floats without rounding noise).

    Returns:
        The p-value (1.0 when every difference is 0) and how it was computed.
    """
    from scipy.stats import permutation_test, rankdata, wilcoxon

    d = np.asarray(d, dtype=float)
    nonzero = d[d != 0]
    if not len(nonzero):
        return 1.0, "no nonzero difference"
    ties_or_zeros = len(nonzero) < len(d) or len(np.unique(np.abs(nonzero))) < len(nonzero)
    if not ties_or_zeros and len(d) <= 50:
        return float(wilcoxon(d, method="exact").pvalue), "exact"
    if len(d) <= EXACT_FLIPS:
        ranks = rankdata(np.abs(d))  # average ranks; sign flips leave them unchanged

        def rank_sum(x, axis):  # Pratt's R+: zeros are never > 0
            return np.sum(ranks * (x > 0), axis=axis)

        p = permutation_test(
            (d,),
            rank_sum,
            permutation_type="samples",
            vectorized=True,
            n_resamples=2 ** len(d),
            alternative="two-sided",
            batch=2**16,
        ).pvalue
        return float(p), f"exact (all 2^{len(d)} sign flips; ties or zeros)"
    p = wilcoxon(d, zero_method="pratt", method="asymptotic").pvalue
    return float(p), "normal approximation (ties or zeros, Pratt)" if ties_or_zeros else "normal approximation"


def hierarchical_bootstrap(
    cells: Sequence[np.ndarray],
    resamples: int,
    rng: np.random.Generator,
    *,
    level: float = LEVEL,
    corrected: bool = True,
) -> np.ndarray:
    """Two-stage bootstrap replicates of a mean over (task, few-shot seed, upstream seed) cells.

    The statistic is the mean over tasks of each task's mean cell. One replicate draws the
    upstream seeds with replacement, once for all tasks (the same meta-trained prompts score
    every task), then each task's few-shot seeds with replacement (tasks are strata: each keeps
    its weight), and takes the statistic of the resampled cells: the pigeonhole bootstrap of a
    crossed design (Owen 2007), stratified by task. Its deviation from the estimate splits into
    an upstream part (the upstream seeds alone resampled), a few-shot part and the remainder,
    the upstream x pair interaction.

    ``corrected`` (the default) fixes the plain version's undercoverage with a few seeds:

    1. Rao-Wu rescaling per level (Rao and Wu 1988): a resample of k values has (k - 1) / k of
       the mean's variance, so the upstream part is scaled by sqrt(U / (U - 1)) and each task's
       few-shot part by sqrt(n / (n - 1));
    2. Welch-Satterthwaite widening: with v_u and v_s the two parts' bootstrap variances, the
       whole deviation is scaled by t / z quantiles at df = (v_u + v_s)^2 / (v_u^2 / (U - 1) +
       v_s^2 / (pairs - tasks)), the degrees of freedom the variance rests on: 2 when the 3
       upstream seeds dominate, pairs - tasks when the few-shot seeds do.

    The remainder is left as drawn; the interaction also enters both parts, so the interval
    errs wide when it is large (a crossed design has no unbiased bootstrap; Owen 2007).
    For one upstream seed this is the stratified percentile bootstrap of rliable (Agarwal et al.
    2021) with Rao-Wu rescaling and t / z at pairs - tasks df.

    Measured (tests/test_stats.py; 95 % intervals, 300 simulated data sets per seed, 3 tasks x 5
    seeds x 3 upstream seeds, effect 0, 1,000 resamples; the share that holds 0 over simulation
    seeds 1-6, and the mean width against the plain bootstrap's):

    - sd 3, 2, 6, 5 points (upstream, task x upstream, few-shot pair, cell): half the variance
      upstream: plain 86.7-89.7 %; corrected 95.0-96.3 % at 1.53 x the width;
    - sd 1.5, 2.5, 7, 6 (like the CPU study's MTL arm): plain 91.3-93.3 %; corrected
      96.3-98.7 % at 1.34 x;
    - sd 3, 0, 2, 2 (the upstream seeds dominate): plain 76.3-84.0 %; corrected 91.3-93.7 % at
      2.15 x.

    The earlier rule resampled the two levels independently and widened each by t / z at its
    own df (2 for 3 upstream seeds): 97.3-99.3 %, 96.7-99.0 % and 94.7-97.0 % in these three
    settings, at 1.97, 1.68 and 2.51 x the plain width. It overcovers unless one level
    dominates. Where the upstream seeds dominate, the estimated df is itself noisy and the
    corrected intervals fall a point or two short of 95 %; a t interval at 2 df is 2.2 x a
    normal one, the width 3 seeds call for.

    Args:
        cells: per task, an array ``[..., n_seeds, n_upstream]``; every task has the same
            upstream seeds, in the same order. Leading axes are kept (several statistics, or
            simulated data sets, at once).
        resamples: bootstrap replicates.
        rng: the random generator (the upstream draw first, then the tasks in order).
        level: the level the small-sample widening is for (that of the interval taken).
        corrected: False gives the plain two-stage bootstrap.

    Returns:
        ``[..., resamples]`` replicates; the percentile interval is their quantiles.
    """
    from scipy.stats import norm, t

    n_up = cells[0].shape[-1]
    if any(c.shape[-1] != n_up for c in cells):
        raise ValueError(f"cells: every task needs the same upstream seeds, got {[c.shape[-1] for c in cells]}")
    up = _weights(rng, n_up, resamples)  # [R, U]: how often each upstream seed was drawn / U
    estimate = dev_up = dev_seed = rest = 0.0
    df_seed = 0
    for x in cells:
        n = x.shape[-2]
        df_seed += n - 1
        draws = _weights(rng, n, resamples)  # [R, n]
        mean = x.mean(axis=(-2, -1))[..., None]
        by_up = x.mean(axis=-2) @ up.T  # upstream seeds resampled, few-shot seeds kept
        by_seed = x.mean(axis=-1) @ draws.T  # few-shot seeds resampled, upstream seeds kept
        both = np.einsum("...su,rs,ru->...r", x, draws, up, optimize=True)
        estimate = estimate + mean
        dev_up = dev_up + (by_up - mean)
        dev_seed = dev_seed + (by_seed - mean) * (_rescale(n) if corrected else 1.0)
        rest = rest + (both - by_up - by_seed + mean)
    k = len(cells)
    estimate, dev_up, dev_seed, rest = estimate / k, dev_up / k, dev_seed / k, rest / k
    if not corrected:
        return np.asarray(estimate + dev_up + dev_seed + rest)
    dev_up = dev_up * _rescale(n_up)
    v_up, v_seed = np.var(dev_up, axis=-1), np.var(dev_seed, axis=-1)
    denominator = (v_up**2 / (n_up - 1) if n_up > 1 else 0.0) + (v_seed**2 / df_seed if df_seed else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denominator > 0, (v_up + v_seed) ** 2 / denominator, np.inf)
    q = (1 + level) / 2
    widen = np.asarray(t.ppf(q, df) / norm.ppf(q))[..., None]
    return np.asarray(estimate + widen * (dev_up + dev_seed + rest))


def _weights(rng: np.random.Generator, k: int, resamples: int) -> np.ndarray:
    """``[resamples, k]``: how often each of k values was drawn in k draws with replacement, / k."""
    idx = rng.integers(0, k, size=(resamples, k))
    counts = np.bincount((idx + k * np.arange(resamples)[:, None]).ravel(), minlength=resamples * k)
    return counts.reshape(resamples, k) / k


def _rescale(k: int) -> float:
    """Rao-Wu rescaling: a resample of k values has (k - 1) / k of the mean's variance; this restores it."""
    return math.sqrt(k / (k - 1)) if k > 1 else 1.0


@dataclass(frozen=True)
class Comparison:
    """A method against PT over paired (task, few-shot seed) scores.

    Attributes:
        diff: mean absolute score difference (fraction; x100 = points), averaged over tasks.
        arg: Average Relative Gain (fraction), averaged over tasks.
        p_improve: P(>PT): the share of cells, one (task, seed, upstream seed) score each, that
            the method wins (ties count half), averaged over tasks: a pair counts once per
            upstream seed.
        p_value: two-sided Wilcoxon signed-rank p of the per-pair differences, the method
            averaged over its upstream seeds (1.0 when every difference is 0).
        p_method: how ``p_value`` was computed (``signed_rank_test``), and on what.
        on_counts: whether the test ran on counts of correct answers (``n_test`` given).
        n_tasks, n_pairs, n_upstream: what the numbers rest on.
        low_baseline: pairs whose PT score is below ``LOW_BASELINE``.
        resamples, level, seed: the bootstrap's settings.
        delta: the equivalence margin of ``verdict`` (fraction).
    """

    diff: Interval
    arg: Interval
    p_improve: Interval
    p_value: float
    p_method: str
    on_counts: bool
    n_tasks: int
    n_pairs: int
    n_upstream: int
    low_baseline: int
    resamples: int
    level: float
    seed: int
    delta: float = DELTA

    @property
    def distinguishable(self) -> bool:
        """The interval of the absolute difference excludes 0."""
        return not self.diff.holds_zero

    def verdict(self, delta: float | None = None) -> str:
        """``verdict`` of the difference's interval (``delta``: this comparison's own by default)."""
        return verdict(self.diff, self.delta if delta is None else delta)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["distinguishable"] = self.distinguishable
        out["verdict"] = self.verdict()
        return out


def relative_gain(score, baseline):
    """RG = (s - s_pt) / s_pt with the denominator clamped at ``MIN_BASELINE`` (arrays work)."""
    return (np.asarray(score, dtype=float) - baseline) / np.maximum(baseline, MIN_BASELINE)


@dataclass(frozen=True)
class _Task:
    """One task's pairs: seeds (sorted), the method's scores ``[n, U]``, PT's ``[n]``, test sizes ``[n]`` or None."""

    name: str
    seeds: list[int]
    method: np.ndarray
    pt: np.ndarray
    n_test: np.ndarray | None


def _by_task(
    scores: Mapping[tuple, float],
    baseline: Mapping[tuple[str, int], float],
    n_test: int | Mapping[tuple[str, int], int] | None,
) -> tuple[list[_Task], int]:
    """The pairs per task, in a fixed order (the bootstrap's draws go to the tasks in that order)."""
    upstream = sorted({k[2] if len(k) == 3 else None for k in scores}, key=lambda u: (u is None, u))
    if None in upstream and len(upstream) > 1:
        raise ValueError("scores mix keys with and without an upstream seed")
    extra = {(k[0], k[1]) for k in scores} - set(baseline)
    if extra:
        raise ValueError(f"no PT baseline for {sorted(extra)[:3]}")
    seeds_of: dict[str, list[int]] = {}
    for key in sorted(baseline):
        seeds_of.setdefault(key[0], []).append(key[1])
    out = []
    for task, seeds in seeds_of.items():
        rows = []
        for s in seeds:
            keys = [(task, s) if u is None else (task, s, u) for u in upstream]
            missing = [k for k in keys if k not in scores]
            if missing:
                raise ValueError(
                    f"no score of the method for {missing[0]}; every (task, seed) of the baseline needs one"
                )
            rows.append([float(scores[k]) for k in keys])
        sizes = None
        if n_test is not None:
            if isinstance(n_test, Mapping) and any((task, s) not in n_test for s in seeds):
                s = next(s for s in seeds if (task, s) not in n_test)
                raise ValueError(f"n_test: no test size for {(task, s)}; give one per (task, seed), or n_test=None")
            sizes = np.asarray([int(n_test[(task, s)]) if isinstance(n_test, Mapping) else int(n_test) for s in seeds])
            if (sizes < 1).any():
                raise ValueError(f"n_test: {sizes.min()} test examples for task {task!r}; sizes must be >= 1")
        out.append(_Task(task, seeds, np.asarray(rows), np.asarray([float(baseline[(task, s)]) for s in seeds]), sizes))
    return out, len(upstream)


def _counts(task: _Task, n_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct answers of the method ``[n, U]`` and of PT ``[n]``: score x test size, which must be whole."""
    for name, values, sizes in (("method", task.method, n_test[:, None]), ("PT", task.pt, n_test)):
        exact = values * sizes
        off = np.abs(exact - np.rint(exact)) > WHOLE
        if off.any():
            i = np.argwhere(off)[0]
            seed = task.seeds[int(i[0])]
            raise ValueError(
                f"n_test: the {name} score {values[tuple(i)]!r} of {(task.name, seed)} is not a whole number of "
                f"its {int(n_test[int(i[0])])} test examples ({exact[tuple(i)]:.4f}); pass the right test "
                "size, or n_test=None for a metric that is not a share of examples (macro-F1, ROUGE-L)"
            )
    return np.rint(task.method * n_test[:, None]).astype(np.int64), np.rint(task.pt * n_test).astype(np.int64)


def compare(
    scores: Mapping[tuple, float],
    baseline: Mapping[tuple[str, int], float],
    *,
    n_test: int | Mapping[tuple[str, int], int] | None = None,
    delta: float = DELTA,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Comparison:
    """Compare a method with PT over paired scores.

    The signed-rank test takes one difference per pair, the method averaged over its U upstream
    seeds. To keep it exact it is computed as U x that difference: with ``n_test``, in correct
    answers, (sum over upstream seeds of the method's count) - U x PT's count, times L / n for a
    pair of n test examples when the sizes differ (L: their least common multiple), so every
    pair is on one scale and ties are ties; without, from the scores as given, sum - U x PT,
    rounded to 9 decimals so that float noise cannot split a tie.

    Args:
        scores: the method's score (a fraction, e.g. accuracy) per ``(task, seed)`` or per
            ``(task, seed, upstream_seed)``.
        baseline: PT's score per ``(task, seed)``; its pairs are the ones compared.
        n_test: test examples per ``(task, seed)`` (or one size for all) when the scores are
            shares of them (accuracy, exact match); each score x its size must be a whole
            number, else ``ValueError``. None for other metrics (macro-F1, ROUGE-L).
        delta: the equivalence margin of the verdict (fraction; 0.02 = 2 points).
        resamples: bootstrap resamples (>= 2,000).
        level: confidence level of the intervals.
        seed: the bootstrap's random seed (the same inputs give the same intervals).

    Returns:
        A ``Comparison``.
    """
    if resamples < 2000:
        raise ValueError(f"resamples={resamples}: use at least 2,000 for a 95 % interval")
    if not 0 <= delta < 1:
        raise ValueError(f"delta={delta}: the equivalence margin is a fraction of the score, e.g. 0.02 for 2 points")
    tasks, n_up = _by_task(scores, baseline, n_test)
    if not tasks:
        raise ValueError("no (task, seed) pairs to compare")
    cells, pair_diffs = [], []
    lcm = math.lcm(*{int(n) for t in tasks if t.n_test is not None for n in t.n_test})  # one scale for all pairs
    for task in tasks:
        m, b = task.method, task.pt[:, None]  # [n, U], [n, 1]
        if task.n_test is not None:
            cm, cb = _counts(task, task.n_test)
            wins = (cm > cb[:, None]) + 0.5 * (cm == cb[:, None])
            pair_diffs.append((cm.sum(axis=1) - n_up * cb) * (lcm // task.n_test))
        else:
            wins = (m > b) + 0.5 * (m == b)
            pair_diffs.append(np.round(m.sum(axis=1) - n_up * task.pt, 9))
        cells.append(np.stack([m - b, relative_gain(m, b), wins]))  # [3, n, U]
    boot = hierarchical_bootstrap(cells, resamples, np.random.default_rng(seed), level=level)  # [3, R]
    point = np.mean([c.mean(axis=(-2, -1)) for c in cells], axis=0)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha], axis=-1)
    diff, arg, p_improve = (Interval(float(point[i]), float(lo[i]), float(hi[i])) for i in range(3))
    p_improve = Interval(p_improve.mean, max(p_improve.lo, 0.0), min(p_improve.hi, 1.0))  # the widening may step past
    p_value, how = signed_rank_test(np.concatenate(pair_diffs))
    how += "; on counts of correct answers" if n_test is not None else "; on the scores as given"
    low = int(sum((t.pt < LOW_BASELINE).sum() for t in tasks))
    n_pairs = sum(len(t.seeds) for t in tasks)
    return Comparison(
        diff,
        arg,
        p_improve,
        p_value,
        how,
        n_test is not None,
        len(tasks),
        n_pairs,
        n_up,
        low,
        resamples,
        level,
        seed,
        delta,
    )


def describe(c: Comparison) -> str:
    """One line: ``+3.1 [−0.8, +7.0] points, ARG +12.0 [...] %, P(>PT) per cell 0.62 [...], Wilcoxon p = 0.21
    (undetermined: interval too wide; ...)``."""
    note = f"; {c.low_baseline} pair(s) with PT < {LOW_BASELINE:.2f}: ARG unreliable" if c.low_baseline else ""
    cells = "per (pair, upstream seed)" if c.n_upstream > 1 else "per pair"
    return (
        f"{c.diff.fmt()} points, ARG {c.arg.fmt()} %, P(>PT) {cells} {c.p_improve.fmt(1, 2, signed=False)}, "
        f"Wilcoxon p = {c.p_value:.3g} ({c.verdict()}; {c.n_tasks} tasks x {c.n_pairs // max(c.n_tasks, 1)} "
        f"seeds x {c.n_upstream} upstream{note})"
    )
