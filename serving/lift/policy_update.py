"""Measured lifts back into the offer policy, shrunk toward the planning assumption.

The policy's ``lift`` is "the share of the at-risk spend the offer keeps": the share of the
customers who would not have bought that the offer brings back. ``retain lift`` measures it
per rule as ``(rate_treated - rate_holdout) / (1 - rate_holdout)`` with a standard error
``s`` (:mod:`serving.lift.measure`). A small campaign measures it badly, so the new value is not the
measurement itself but the posterior mean of a normal-normal model:

- prior: ``lift ~ Normal(old, prior_sd^2)``: the value in the policy, as uncertain as
  ``prior_sd`` says (default 0.05: "within about +-0.1 of the plan");
- likelihood: ``measured ~ Normal(lift, s^2)``;
- posterior mean ``w * measured + (1 - w) * old`` with ``w = prior_sd^2 / (prior_sd^2 + s^2)``
  (precision weighting), posterior sd ``sqrt(1 / (1 / prior_sd^2 + 1 / s^2))``;

then clipped to ``[0, 1]`` (the policy cannot express an offer that puts customers off: a
negative measurement says to drop or change the rule, and the note beside it says so).

The new policy keeps the old file's text (comments and layout) with only the ``lift`` values
changed and a note beside each: the measurement, its 95% interval, the sample sizes, the
weight; it is validated by loading it with :class:`~serving.offers.policy.OfferPolicy` and checking
that it equals the intended policy (else the file is rewritten from the policy itself). The
old file is never written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.atomic import write_text_atomic
from features.errors import InputError
from serving.lift.assignments import ALL_SEGMENTS
from serving.offers.policy import OfferPolicy

DEFAULT_PRIOR_SD = 0.05
_LIFT_LINE = re.compile(r"^(?P<head>\s*(?:-\s+)?lift:\s*)(?P<value>[^#\s]+)(?P<tail>\s*(?:#.*)?)$")


class PolicyUpdateError(InputError):
    """The measured lifts cannot be written into this policy (names what is missing)."""


@dataclass(frozen=True)
class RuleUpdate:
    """One rule's old and new lift, and why."""

    rule: str
    old: float
    new: float
    note: str


def shrink(measured: float, se: float, prior: float, prior_sd: float) -> tuple[float, float, float]:
    """Posterior mean, posterior sd and the measurement's weight (normal-normal)."""
    if not (math.isfinite(measured) and math.isfinite(se) and se > 0):
        return prior, prior_sd, 0.0
    weight = prior_sd**2 / (prior_sd**2 + se**2)
    mean = weight * measured + (1.0 - weight) * prior
    sd = math.sqrt(1.0 / (1.0 / prior_sd**2 + 1.0 / se**2))
    return mean, sd, weight


def rule_updates(
    policy: OfferPolicy,
    offers: pd.DataFrame,
    *,
    window_days: int,
    prior_sd: float = DEFAULT_PRIOR_SD,
) -> list[RuleUpdate]:
    """New lift per rule from one campaign's offer-level rows of :class:`serving.lift.LiftResult`."""
    if prior_sd <= 0:
        raise PolicyUpdateError(f"prior sd must be > 0, got {prior_sd}")
    rows = offers.loc[offers["segment"] == ALL_SEGMENTS]
    campaigns = sorted(set(rows["campaign"]))
    if len(campaigns) > 1:
        raise PolicyUpdateError(
            f"the assignments hold {len(campaigns)} campaigns {campaigns}: pick the one to "
            "update the policy from with --campaign"
        )
    by_rule = {r["rule"]: r for r in rows.to_dict(orient="records")}
    for r in by_rule.values():
        for side, n in (("treated", "treated_in_log"), ("held-out", "holdout_in_log")):
            arm = "treated" if side == "treated" else "holdout"
            if n in r and int(r[arm]) > 0 and int(r[n]) == 0:
                raise PolicyUpdateError(
                    f"rule {r['rule']!r}: none of its {int(r[arm]):,} {side} customer ids is "
                    "in the purchase log, so its buy rate reads 0: the policy is not updated "
                    "from this measurement"
                )
    unknown = sorted(set(by_rule) - {r.name for r in policy.rules})
    if unknown:
        raise PolicyUpdateError(
            f"measured rule(s) {unknown} are not in the policy; rules there: "
            f"{[r.name for r in policy.rules]}"
        )
    updates = []
    for rule in policy.rules:
        row = by_rule.get(rule.name)
        if row is None:
            updates.append(RuleUpdate(rule.name, rule.lift, rule.lift, "not measured"))
            continue
        measured, se = float(row["policy_lift"]), float(row["policy_lift_se"])
        mean, sd, weight = shrink(measured, se, rule.lift, prior_sd)
        new = round(min(max(mean, 0.0), 1.0), 4)
        sizes = f"{int(row['treated'])} treated, {int(row['holdout'])} held out"
        if weight == 0.0:
            note = f"not measurable ({sizes}): kept"
        else:
            note = (
                f"measured {measured:.3f} (95% CI {float(row['policy_lift_low']):.3f}.."
                f"{float(row['policy_lift_high']):.3f};"
                f" {sizes}; campaign {row['campaign']}, {window_days}-day window), "
                f"prior {rule.lift:g} sd {prior_sd:g}, weight {weight:.2f}, "
                f"posterior sd {sd:.3f}"
            )
            if mean < 0:
                note += "; the offer puts customers off: consider dropping the rule"
        updates.append(RuleUpdate(rule.name, rule.lift, new, note))
    return updates


def updated_policy_text(old_text: str, policy: OfferPolicy, updates: list[RuleUpdate]) -> str:
    """``old_text`` with each rule's ``lift`` replaced and annotated (validated on return)."""
    new_rules = [
        rule.model_copy(update={"lift": u.new})
        for rule, u in zip(policy.rules, updates, strict=True)
    ]
    wanted = policy.model_copy(update={"rules": new_rules})
    for source in (old_text, wanted.to_yaml()):
        text = _replace_lifts(source, updates)
        if text is None:
            continue
        try:
            loaded = OfferPolicy.from_yaml(text)
        except ValueError:
            continue
        if loaded.model_dump() == wanted.model_dump():
            header = (
                "# Lifts measured by `retain lift` against the holdout, shrunk toward the "
                "previous values\n# (precision-weighted normal-normal; see serving/lift/policy_update.py).\n"
            )
            return header + text
    raise PolicyUpdateError("could not write a policy that loads back to the updated lifts")


def _replace_lifts(text: str, updates: list[RuleUpdate]) -> str | None:
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if _LIFT_LINE.match(line)]
    if len(hits) != len(updates):
        return None
    for i, update in zip(hits, updates, strict=True):
        m = _LIFT_LINE.match(lines[i])
        assert m is not None
        lines[i] = f"{m.group('head')}{update.new:g}  # {update.note}"
    return "\n".join(lines) + "\n"


def write_updated_policy(
    policy_path: Path, out: Path, offers: pd.DataFrame, *, window_days: int, prior_sd: float
) -> list[RuleUpdate]:
    """Read the old policy, write the new one atomically to ``out`` (never over the old)."""
    if out.resolve() == policy_path.resolve() or (
        out.exists() and policy_path.exists() and out.samefile(policy_path)
    ):
        raise PolicyUpdateError(
            f"--out {out} is the policy being updated: the old policy is never overwritten"
        )
    old_text = policy_path.read_text(encoding="utf-8")
    policy = OfferPolicy.from_yaml(old_text)
    updates = rule_updates(policy, offers, window_days=window_days, prior_sd=prior_sd)
    write_text_atomic(out, updated_policy_text(old_text, policy, updates))
    return updates
