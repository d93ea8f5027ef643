"""Numbers as a person reads them: shares, sizes, durations and thresholds, formatted one way
everywhere (panels, notebooks, reports), so one split never reads 12.9 % in one place and 13.0 %
in another, and a tiny model's memory never reads as 0.00 GiB."""
from __future__ import annotations

import math


def percent(fraction: float, digits: int = 1) -> str:
    """``0.1295`` -> ``"13.0 %"`` (the share as a percentage, rounded once, half away from zero)."""
    scaled = round_half_up(100 * fraction, digits)
    return f"{scaled:.{digits}f} %"


def round_half_up(value: float, digits: int) -> float:
    """Rounded to ``digits`` decimals, halves away from zero (12.95 -> 13.0, whatever its binary form)."""
    q = 10 ** digits
    return math.copysign(math.floor(abs(value) * q + 0.5 + 1e-9) / q, value)


def size(gib: float) -> str:
    """A memory size given in GiB: ``"8.1 GiB"``, ``"740 MiB"``, ``"0.3 MiB"``."""
    if gib >= 1:
        return f"{gib:.1f} GiB"
    mib = gib * 1024
    return f"{mib:.0f} MiB" if mib >= 10 else f"{mib:.2g} MiB"


def duration(seconds: float) -> str:
    """``"0.4 s"``, ``"12 s"``, ``"3.5 min"``, ``"2.1 h"``."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def threshold(value: float) -> str:
    """A threshold (τ, a quantile) to three significant digits: ``2.73525`` -> ``"2.74"``."""
    return f"{value:.3g}"


def comparison(difference: float, half_width: float) -> str:
    """How ``a`` stands against ``b`` given their difference ``a − b`` and its 95 % half-width:
    ``"better than"`` or ``"worse than"`` when the interval excludes zero, else ``"not
    distinguishable from"``. Every verdict the kit prints (paired over seeds, or one seed read
    against a measured seed noise) is decided here, so a page never says two things."""
    if difference - half_width > 0:
        return "better than"
    if difference + half_width < 0:
        return "worse than"
    return "not distinguishable from"
