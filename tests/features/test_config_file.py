"""The one config reader's rules, and how a scoring run combines a file with a model's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.config_file import (
    LogConfigError,
    apply_options,
    load_log_config,
    load_segment_config,
    log_config_from_options,
)
from features.log.schema import LogConfig, scoring_log_config


def test_sections_in_yaml_and_toml_read_alike(tmp_path: Path) -> None:
    yaml_file = tmp_path / "retain.yaml"
    yaml_file.write_text("log:\n  timezone: Europe/Paris\nsegments:\n  at_risk_days: 90\n")
    toml_file = tmp_path / "retain.toml"
    toml_file.write_text('[log]\ntimezone = "Europe/Paris"\n[segments]\nat_risk_days = 90\n')
    for path in (yaml_file, toml_file):
        assert load_log_config(path) == LogConfig(timezone="Europe/Paris")
        assert load_log_config(path).model_fields_set == {"timezone"}
        assert load_segment_config(path).at_risk_days == 90


def test_fields_beside_sections_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "retain.yaml"
    path.write_text("timezone: UTC\nsegments:\n  at_risk_days: 90\n")
    with pytest.raises(LogConfigError, match=r"\['timezone'\] beside .* move them under 'log:'"):
        load_log_config(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.yaml", None, "config file not found"),
        ("retain.ini", "x", "unsupported config file type '.ini'"),
        ("list.yaml", "- a\n", "expected a mapping at the top level, got list"),
        ("log.yaml", "log: 3\n", "'log' must be a mapping, got int"),
        ("bad.toml", "[log\n", "not valid TOML"),
    ],
)
def test_unusable_files_name_the_file(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(LogConfigError, match=message) as caught:
        load_log_config(path)
    assert str(path) in str(caught.value)


def test_options_override_the_file_one_column_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "log.yaml"
    path.write_text("log:\n  columns: {customer_id: Kunde, amount: Betrag}\n  duplicates: keep\n")
    config = log_config_from_options(path, ["amount=Umsatz"], strict=True, timezone="Asia/Tokyo")
    assert config == LogConfig(
        columns={"customer_id": "Kunde", "amount": "Umsatz"},
        duplicates="keep",
        strict=True,
        timezone="Asia/Tokyo",
    )
    assert config.model_fields_set == {"columns", "duplicates", "strict", "timezone"}
    assert apply_options(LogConfig(), None) == LogConfig()
    with pytest.raises(LogConfigError, match="invalid log configuration"):
        apply_options(LogConfig(), None, timezone=42)  # type: ignore[arg-type]


def test_scoring_keeps_the_models_counting_rules_and_takes_the_files_format() -> None:
    trained = LogConfig(
        cancel_prefix="X", duplicates="keep", timezone="Europe/London", columns={"amount": "A"}
    )
    assert scoring_log_config(trained, None) == trained
    given = LogConfig.model_validate({"timezone": "UTC", "cancel_prefix": "X"})
    assert scoring_log_config(trained, given) == trained.model_copy(update={"timezone": "UTC"})
    clash = LogConfig.model_validate({"cancel_prefix": "C", "duplicates": "drop"})
    with pytest.raises(ValueError) as caught:
        scoring_log_config(trained, clash)
    message = str(caught.value)
    assert "cancel_prefix: the model was trained with 'X', --config says 'C'" in message
    assert "duplicates: the model was trained with 'keep', --config says 'drop'" in message
    # a default the file does not write is not a conflict
    assert scoring_log_config(trained, LogConfig()) == trained
