"""The options commands share (``features.cli_options``): one spelling, one help everywhere.

Before the shared module, ``-m`` was missing on train, evaluate and promote, the model
name was ``--name`` or ``--registered-model`` depending on the command, ``--map`` had five
help texts and ``train`` and ``lift`` were closures inside ``register()``; rich's help
tables cut text with "…" at 80 columns.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from serving.cli import app
from tests.retain_cli import retain

# option -> the commands that must take it (every command reading a log, model or store)
LOG_COMMANDS = [
    "kpis",
    "features",
    "segments",
    "evaluate",
    "train",
    "promote",
    "score",
    "report",
    "lift",
    "uplift-train",
]
SHARED: dict[str, list[str]] = {
    "--data": [*LOG_COMMANDS, "partition"],
    "--table": LOG_COMMANDS,
    "--query": LOG_COMMANDS,
    "--url-env": LOG_COMMANDS,
    "--map": [*LOG_COMMANDS, "partition"],
    "--config": LOG_COMMANDS,
    "--strict": ["kpis", "features", "segments", "evaluate"],
    "--as-of": ["features", "segments", "evaluate", "train", "score", "report"],
    "--model-uri": ["serve", "bento", "score", "uplift-train"],
    "--tracking-uri": ["train", "promote", "rollback", "models", "serve", "bento", "lift"],
    "--registered-model": ["train", "promote", "rollback", "models", "serve"],
    "--experiment": ["train", "lift"],
    "--dask": ["train", "score"],
    "--dask-local": ["train", "score"],
    "--threads": ["evaluate", "train", "score"],
}


def _commands() -> dict[str, Any]:
    """The root app's commands (typer's own click: its classes are private, hence Any)."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _option(command: Any, name: str) -> Any:
    for param in command.params:
        if param.param_type_name == "option" and name in param.opts:
            return param
    return None


def test_each_shared_option_has_one_spelling_and_one_help() -> None:
    commands = _commands()
    for name, users in SHARED.items():
        seen: dict[tuple[tuple[str, ...], str | None], list[str]] = {}
        for command_name in users:
            option = _option(commands[command_name], name)
            assert option is not None, f"{command_name} lacks {name}"
            seen.setdefault((tuple(option.opts), option.help), []).append(command_name)
        assert len(seen) == 1, f"{name} differs across commands: {seen}"
        for command_name, command in commands.items():  # nobody redefines it on the side
            option = _option(command, name)
            if option is not None:
                assert (tuple(option.opts), option.help) in seen, (command_name, name)
    assert _option(commands["train"], "-m") is not None  # the short flags reach every command
    assert _option(commands["promote"], "-d") is not None


def test_every_command_is_a_module_level_function() -> None:
    for name, command in _commands().items():
        callback = inspect.unwrap(command.callback)  # typer wraps it to convert values
        assert "<locals>" not in callback.__qualname__, name
        module = __import__(callback.__module__, fromlist=["_"])
        assert getattr(module, callback.__name__) is callback, name


def test_help_fits_80_columns() -> None:
    runner = CliRunner()
    for name in ["", *_commands()]:
        args = [name, "--help"] if name else ["--help"]
        done = runner.invoke(app, args, env={"COLUMNS": "80"})
        assert done.exit_code == 0, done.output
        lines = done.output.splitlines()
        assert len(lines) > 3, name
        too_long = [line for line in lines if len(line) > 80]
        assert not too_long, (name, too_long)
        assert "…" not in done.output, name  # nothing cut off


def test_old_spellings_are_hidden() -> None:
    runner = CliRunner()
    for command, old in (("train", "--name"), ("models", "--name"), ("uplift-train", "--artifact")):
        shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}).output
        assert f"{old} " not in shown, command


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty MLflow sqlite store (its schema created, no model registered)."""
    from training.registry.tracking_store import configure_tracking

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    return configure_tracking(f"sqlite:///{path}")


@pytest.mark.parametrize("spelling", ["--registered-model", "--name"])
def test_model_name_old_and_new_spelling(store: str, tmp_path: Path, spelling: str) -> None:
    """``--name`` (the old spelling, in scripts) still names the registered model."""
    done = retain("models", "--tracking-uri", store, spelling, "churn-eu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no versions registered under 'churn-eu'" in done.stdout


def test_model_name_given_twice_differently_is_a_usage_error(store: str, tmp_path: Path) -> None:
    args = ("--registered-model", "a", "--name", "b")
    done = retain("rollback", "--tracking-uri", store, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--name is the old name of --registered-model" in done.stderr
    assert "Traceback" not in done.stderr


def test_uplift_train_takes_the_old_artifact_spelling(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("customer_id,timestamp,amount\n1,2024-01-01,5\n", encoding="utf-8")
    common = ["uplift-train", "--assignments", str(tmp_path), "--data", str(log)]
    common += ["--out", str(tmp_path / "new")]
    runner = CliRunner()
    missing = runner.invoke(app, common)
    assert missing.exit_code == 2
    assert "'--model-uri': missing" in missing.output
    old = runner.invoke(app, [*common, "--artifact", str(tmp_path / "no-such-artifact")])
    assert old.exit_code == 2, old.output
    assert "--model-uri" not in old.output  # taken as the model: the command body ran
    assert old.output.startswith("error: ")
