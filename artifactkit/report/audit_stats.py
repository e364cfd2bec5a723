"""Statistics for the submission audit: mean and sample standard deviation over seeds,
and the one-sided Welch t-test that one submission's seeds score lower (better) than
another's. The Student t CDF is computed here from the regularized incomplete beta
function (continued fraction, stdlib only), so the audit needs no scipy."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONTINUED_FRACTION_STEPS = 300
CONTINUED_FRACTION_TOLERANCE = 1e-15
TINY = 1e-300  # keeps Lentz's method away from division by zero


def mean_and_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with n - 1); std is None below two values."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > TINY else TINY)
    fraction = d
    for m in range(1, CONTINUED_FRACTION_STEPS + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > TINY else TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > TINY else TINY
            fraction *= c * d
        if abs(c * d - 1.0) < CONTINUED_FRACTION_TOLERANCE:
            break
    return fraction


def regularized_incomplete_beta(a: float, b: float, x: float, one_minus_x: float | None = None) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1. Pass `one_minus_x` when it is known more
    exactly than `1 - x` (near x = 1 the subtraction loses digits)."""
    if one_minus_x is None:
        one_minus_x = 1.0 - x
    if not (a > 0 and b > 0) or not 0.0 <= x <= 1.0:
        raise ValueError(f"regularized_incomplete_beta needs a, b > 0 and 0 <= x <= 1 (got {a}, {b}, {x})")
    if x == 0.0 or one_minus_x == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log(one_minus_x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    # the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) keeps the fraction in its fast region
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, one_minus_x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df > 0 degrees of freedom (df need not be an integer)."""
    if not df > 0 or math.isnan(t):
        raise ValueError(f"student_t_cdf needs df > 0 and a number t (got t={t}, df={df})")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    denominator = df + t * t
    # P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2), with 1 - x passed exactly for t near 0
    two_tail = regularized_incomplete_beta(df / 2.0, 0.5, df / denominator, t * t / denominator)
    return 1.0 - 0.5 * two_tail if t > 0 else 0.5 * two_tail


@dataclass
class WelchResult:
    """One-sided Welch test of H1: mean(a) < mean(b)."""

    difference: float  # mean(a) - mean(b); negative means a is lower (better)
    t: float
    df: float
    p_value: float

    def to_json(self) -> dict:
        return {"difference": self.difference, "t": self.t, "df": self.df, "p_value": self.p_value}


def welch_one_sided(a: list[float], b: list[float]) -> WelchResult | None:
    """P-value that a's mean is lower than b's (Welch's unequal-variance t-test).
    None when either side has fewer than two values or both have zero spread."""
    if len(a) < 2 or len(b) < 2:
        return None
    mean_a, std_a = mean_and_std(a)
    mean_b, std_b = mean_and_std(b)
    var_a, var_b = std_a ** 2 / len(a), std_b ** 2 / len(b)
    if var_a + var_b == 0.0:
        return None
    t = (mean_a - mean_b) / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    return WelchResult(difference=mean_a - mean_b, t=t, df=df, p_value=student_t_cdf(t, df))
