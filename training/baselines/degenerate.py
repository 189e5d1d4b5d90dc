"""When a fitted BG/NBD or Pareto/NBD has collapsed to "nobody ever drops out"."""

from __future__ import annotations

import math

# The no-dropout collapse: BG/NBD and Pareto/NBD fitted to a population that shows no sign
# of dropout (a short or growing log) push their dropout distribution to "never": BG/NBD's
# a -> 0 (seen: a = 3.5e-05), Pareto/NBD's s -> 0 (seen: s = 1.7e-04) or beta -> infinity.
# Their P(alive) is then ~1 for everyone and says nothing about churn. The rule, on the
# fitted parameters: BG/NBD is degenerate when the mean dropout probability after a purchase,
# a / (a + b), is below 0.1 %; Pareto/NBD when the share of customers expected to drop out
# within ``span`` weeks (the longest customer age of the fit), 1 - (beta / (beta + span))^s,
# is below 1 %. For scale: the CDNOW fits at 1998-01-01 give 21 % per purchase (a = 0.61,
# b = 2.27) and 61 % over 78 weeks (s = 0.37, beta = 6.4).
BGNBD_MIN_DROPOUT = 1e-3
PNBD_MIN_DROPOUT = 1e-2


def degenerate_fit(model: str, params: dict[str, float], span: float = 52.0) -> str | None:
    """Why a fitted BG/NBD (``bgnbd``) or Pareto/NBD (``paretonbd``) is degenerate, or None.

    ``span`` is the time the fit observed (its largest ``T``), in the fit's time unit. Any
    parameter not finite and positive is degenerate too.
    """
    bad = [k for k, v in params.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        return f"parameter(s) {bad} not finite and positive"
    if model == "bgnbd":
        a, b = params["a"], params["b"]
        dropout = a / (a + b)
        if dropout < BGNBD_MIN_DROPOUT:
            return (
                f"a = {a:.3g}, b = {b:.3g}: mean dropout probability per purchase "
                f"{dropout:.2g} < {BGNBD_MIN_DROPOUT:g}, a no-dropout collapse "
                "(P(alive) ~ 1 for everyone)"
            )
        return None
    if model == "paretonbd":
        s_, beta = params["s"], params["beta"]
        dropout = 1.0 - (beta / (beta + max(span, 0.0))) ** s_
        if dropout < PNBD_MIN_DROPOUT:
            return (
                f"s = {s_:.3g}, beta = {beta:.3g}: expected dropout within {span:.0f} time "
                f"units {dropout:.2g} < {PNBD_MIN_DROPOUT:g}, a no-dropout collapse "
                "(P(alive) ~ 1 for everyone)"
            )
        return None
    raise ValueError(f"degenerate_fit: unknown model {model!r}; 'bgnbd' or 'paretonbd'")
