"""``retain uplift-train``: an uplift model from past campaigns, added to a new artifact.

Why a separate command writing a new artifact, rather than an option of ``retain train``:
the uplift model learns from campaigns that were scored by an existing model, and the
artifact that scored them is already registered and validated. This command copies that
artifact byte for byte into ``--out`` and adds the uplift model
(:func:`training.artifact.add_uplift`); the old artifact is never modified, and serving
the new one is pointing ``--model-uri`` (or a registry version) at it.

Before the final fit on every assigned customer, a seeded share of customers is held out,
the model is fitted on the rest and evaluated on them: the Qini coefficient and the uplift
at the top 10 % and 30 %, against targeting by the churn probability the campaign was
scored with (when the assignments carry it) and at random. The figures are printed and
kept in the new artifact's manifest (``uplift``). A model that targets worse than random
on them (Qini below 0) is not written unless ``--allow-below-random`` says so: its uplift
would set every offer's expected value.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from features.cli_options import (
    ConfigOption,
    DataOption,
    MapOption,
    OptionalModelUriOption,
    QueryOption,
    TableOption,
    UrlEnvOption,
    required,
    with_old_spelling,
)
from features.errors import InputError
from features.sources.log_source import log_source

if TYPE_CHECKING:
    import pandas as pd

    from features.sources.database_log import DatabaseLog

logger = logging.getLogger("retain.uplift")
LEARNERS = ("two_model", "transformed_outcome")


class UpliftTrainError(InputError):
    """An option of ``retain uplift-train`` that cannot be used, or a model not worth writing."""


def check_options(learner: str, evaluate_share: float) -> None:
    """``--learner`` and ``--evaluate-share``, checked before anything is read."""
    if learner not in LEARNERS:
        raise UpliftTrainError(f"--learner {learner!r}: use one of {', '.join(LEARNERS)}")
    if not (math.isfinite(evaluate_share) and 0.0 < evaluate_share < 1.0):
        raise UpliftTrainError(
            f"--evaluate-share must be between 0 and 1 (both excluded), got {evaluate_share}"
        )


def check_better_than_random(table: pd.DataFrame, held_out: int, allow: bool) -> None:
    """Refuse (or, when ``allow``, warn about) an uplift model worse than random targeting.

    A Qini coefficient of 0 is what a random order gets on average; below it the model
    sends offers first to the customers they help least.
    """
    qini = float(table.loc["uplift", "qini"])
    if not qini < 0:
        return
    message = (
        f"the uplift model targets worse than random on the {held_out:,} held-out customers "
        f"(Qini {qini:.4f} < 0; this draw of a random order: "
        f"{float(table.loc['random', 'qini']):.4f})"
    )
    if not allow:
        raise UpliftTrainError(
            f"{message}; no artifact written (check the assignments and the window, or pass "
            "--allow-below-random to write it anyway)"
        )
    logger.warning("%s; written anyway (--allow-below-random)", message)


def read_uplift_input(path: Path) -> Any:
    """``retain score`` output (directory) or a CSV/Parquet table -> (assignments, scores).

    Both are read by :func:`features.retention.assignments.read_assignments`, the reader ``retain
    lift`` uses (one rule for who is treated and held out: ``holdout`` or ``treated``, or a
    score output's rules and holdout draw). ``scores`` is the frame read when it is a
    ``retain score`` output (for the churn probability to compare with), else None.
    """
    import pandas as pd

    from features.retention.assignments import read_assignments
    from serving.batch.publish import read_scores
    from training.dataset.uplift_data import UpliftDataError

    if path.is_dir():
        frame = read_scores(path)
    elif not path.exists():
        raise UpliftDataError(f"--assignments not found: {path}")
    elif path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv" or path.name.lower().endswith(".csv.gz"):
        frame = pd.read_csv(path, dtype={"customer_id": "str"})
    else:
        raise UpliftDataError(
            f"--assignments {path}: use a `retain score` directory, CSV or Parquet"
        )
    is_scores = "offer_rule" in frame.columns
    return read_assignments(frame, arms=False), (frame if is_scores else None)


def uplift_train_command(
    model_uri: str,
    assignments_path: Path,
    data: Path | DatabaseLog,
    out: Path,
    *,
    window_days: int | None = None,
    observed_until: str | None = None,
    learner: str = "two_model",
    evaluate_share: float = 0.3,
    seed: int = 0,
    mapping: list[str] | None = None,
    config_file: Path | None = None,
    allow_below_random: bool = False,
) -> dict[str, Any]:
    """Build the training set, evaluate on held-out customers, fit on all, write ``out``."""
    from features.log.purchase_log import read_purchase_log
    from features.log.reading import parse_mapping
    from features.log.schema import LogConfig
    from features.utc import to_utc_timestamp
    from serving.model_source import resolved_artifact
    from training.artifact import add_uplift, load_artifact
    from training.dataset.uplift_data import uplift_training_set
    from training.models.uplift import UpliftModel, evaluate_on_held_out, held_out_customers

    check_options(learner, evaluate_share)
    if config_file is not None:
        from features.config_file import load_log_config

        config = load_log_config(config_file)
    else:
        config = LogConfig()
    if mapping:
        config = config.model_copy(update={"columns": {**config.columns, **parse_mapping(mapping)}})
    if isinstance(data, Path) and not data.exists():
        raise FileNotFoundError(f"purchase log not found: {data}")
    assignments, scores = read_uplift_input(assignments_path)
    until = None if observed_until is None else to_utc_timestamp(observed_until)
    with resolved_artifact(model_uri) as (artifact_dir, _source):
        artifact = load_artifact(artifact_dir)
        window = artifact.horizon_days if window_days is None else window_days
        log = read_purchase_log(data, config).log
        train_set = uplift_training_set(
            log, assignments, window, artifact.feature_config, observed_until=until
        )
        test = held_out_customers(train_set.features.index, evaluate_share, seed)
        params: dict[str, Any] = {"learner": learner, "seed": seed}
        targets = {}
        if scores is not None and "churn_probability" in scores.columns:
            ids = scores["customer_id"].astype("str").str.strip()
            churn = scores.set_index(ids)["churn_probability"]
            key = assignments.frame["customer_id"].to_numpy()
            targets["churn_probability"] = churn.reindex(key).to_numpy(dtype=float)
        table = evaluate_on_held_out(
            train_set, test, {"uplift": UpliftModel(**params)}, targets, seed
        )
        check_better_than_random(table, int(test.sum()), allow_below_random)
        model = UpliftModel(**params).fit(train_set.features, train_set.treated, train_set.bought)
        sent = train_set.treated == 1
        metadata = {
            "window_days": int(window),
            "customers": len(train_set),
            "sent": int(sent.sum()),
            "held_out": int((~sent).sum()),
            "buying_rate_sent": float(train_set.bought[sent].mean()),
            "buying_rate_held_out": float(train_set.bought[~sent].mean()),
            "send_dates": [
                str(train_set.send_date.min().date()),
                str(train_set.send_date.max().date()),
            ],
            "evaluation": {
                "held_out_customers": int(test.sum()),
                "seed": seed,
                "targeting": json.loads(table.to_json(orient="index")),
            },
        }
        path = add_uplift(artifact_dir, model, out, uplift_metadata=metadata)
    return {"artifact": str(path), **metadata, "_table": table, "_log_rows": len(log)}


def uplift_train(
    model_uri: OptionalModelUriOption = None,
    old_artifact: str | None = typer.Option(
        None, "--artifact", hidden=True, help="Old name of --model-uri."
    ),
    assignments: Path = typer.Option(
        ...,
        "--assignments",
        help="The campaign's `retain score` directory, or a CSV/Parquet table with "
        "customer_id, send_date, and treated or holdout (and campaign when several).",
    ),
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    out: Path = typer.Option(..., "--out", "-o", help="The new artifact directory."),
    window: int | None = typer.Option(
        None,
        "--window",
        min=1,
        help="Outcome window, days from each send date (default: the model's horizon).",
    ),
    observed_until: str | None = typer.Option(
        None,
        "--observed-until",
        help="First day the log does not cover (default: the day after its last row).",
    ),
    learner: str = typer.Option("two_model", "--learner", help="two_model or transformed_outcome."),
    evaluate_share: float = typer.Option(
        0.3, "--evaluate-share", help="Share of customers held out to evaluate on."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out draw and the model."),
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    allow_below_random: bool = typer.Option(
        False,
        "--allow-below-random",
        help="Write the artifact even when the model targets worse than random (Qini < 0).",
    ),
) -> None:
    """Train an uplift model on past campaigns; write a new artifact that carries it."""
    model_uri = required(
        with_old_spelling(model_uri, old_artifact, "--model-uri", "--artifact"), "--model-uri"
    )
    source = log_source(data, table=table, query=query, url_env=url_env, config_file=config_file)
    result = uplift_train_command(
        model_uri,
        assignments,
        source,
        out,
        window_days=window,
        observed_until=observed_until,
        learner=learner,
        evaluate_share=evaluate_share,
        seed=seed,
        mapping=mapping,
        config_file=config_file,
        allow_below_random=allow_below_random,
    )
    targeting = result.pop("_table")
    result.pop("_log_rows")
    typer.echo(
        f"held-out customers ({result['evaluation']['held_out_customers']:,}), targeting by:",
        err=True,
    )
    typer.echo(targeting.to_string(float_format=lambda v: f"{v:.4f}"), err=True)
    typer.echo(f"wrote {result['artifact']}", err=True)
    typer.echo(json.dumps(result, sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add ``uplift-train`` to the root app."""
    app.command("uplift-train")(uplift_train)
