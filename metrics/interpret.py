"""Plain-language readings of agreement coefficients, shown next to the number (never instead of it).

Kappa-type coefficients use Landis & Koch (1977): below 0 poor, 0.00-0.20 slight, 0.21-0.40 fair,
0.41-0.60 moderate, 0.61-0.80 substantial, 0.81-1.00 almost perfect. Krippendorff's alpha uses his own
thresholds (Krippendorff 2004, 2011): alpha >= 0.800 reliable, 0.667 <= alpha < 0.800 good enough only
for tentative conclusions, below 0.667 not reliable.
"""

from __future__ import annotations

LANDIS_KOCH = ((0.0, "poor"), (0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial"),
               (float("inf"), "almost perfect"))
ALPHA_RELIABLE = 0.800
ALPHA_TENTATIVE = 0.667


def landis_koch(value: float) -> str:
    """The Landis & Koch band of a kappa: poor, slight, fair, moderate, substantial, almost perfect."""
    if value < 0:
        return "poor"
    for upper, band in LANDIS_KOCH[1:]:
        if round(value, 10) <= upper:
            return band
    return "almost perfect"


def alpha_band(value: float) -> str:
    if value >= ALPHA_RELIABLE:
        return "reliable"
    if value >= ALPHA_TENTATIVE:
        return "tentative"
    return "unreliable"


def _interval_note(low: float | None, high: float | None, band_of, value: float) -> str:
    if low is None or high is None:
        return ""
    lo, hi = band_of(low), band_of(high)
    if lo == hi == band_of(value):
        return f" The 95% interval stays within '{lo}'."
    return f" The 95% interval runs from '{lo}' to '{hi}', so the band is not settled."


def reading(name: str, value: float | None, *, ci_low: float | None = None, ci_high: float | None = None,
            reason: str | None = None) -> str:
    """One or two sentences that say what the number means for a person deciding whether to trust labels."""
    if value is None:
        return f"Not computed: {reason}." if reason else "Not computed."
    if name == "krippendorff_alpha":
        band = alpha_band(value)
        text = {"reliable": f"At or above {ALPHA_RELIABLE:.3f}: reliable enough to train on.",
                "tentative": f"Between {ALPHA_TENTATIVE:.3f} and {ALPHA_RELIABLE:.3f}: good enough only for "
                             "tentative conclusions; tighten the guidelines before relying on these labels.",
                "unreliable": f"Below {ALPHA_TENTATIVE:.3f}: not reliable; annotators disagree too often to trust "
                              "single labels."}[band]
        return text + _interval_note(ci_low, ci_high, alpha_band, value)
    if name == "percent_agreement":
        return (f"Annotator pairs give the same answer {value:.0%} of the time. This does not correct for "
                "agreement by chance; read it next to kappa or alpha.")
    if "kappa" in name:
        band = landis_koch(value)
        text = f"'{band.capitalize()}' agreement beyond chance (Landis & Koch)."
        if value < 0:
            text = "Worse than chance: annotators disagree more often than random answers would."
        return text + _interval_note(ci_low, ci_high, landis_koch, value)
    return ""
