"""Registry updates from real, concurrent ``retain`` processes on one sqlite store.

``retain promote`` and ``retain rollback`` run as separate processes. A small wrapper
(:data:`_HOOKED`) runs the real CLI with one observation point added: it pauses a
promotion (until the test says go) or kills it with SIGKILL at a named step, so each race is
played in the same order every time. Nothing of retain or MLflow is replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from features.synthetic.synth import generate_purchase_log
from serving.lifecycle_wiring import SERVING_PARTS
from training.lifecycle import promote_challenger, train_and_register
from training.registry import tracking_store
from training.registry import versions as registry

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_MODELS = {
    "n_snapshots": 2,
    "num_boost_round": 8,
    "early_stopping_rounds": 4,
    "num_threads": 1,
    "use_baselines": False,
    "lgb_params": {"min_data_in_leaf": 10, "num_leaves": 7},
}

# Runs ``python -m serving.cli ARGS`` with one pause or kill point:
#   HOOK=smoke    pause after the challenger's load-and-score check
#   HOOK=between  pause after the first of (champion alias moved, history written)
#   HOOK=kill     SIGKILL itself at that same point
#   HOOK=enter    write HOOK_DIR/rollback.entered when rollback starts its registry work
# A pause writes HOOK_DIR/<point>.paused and waits for HOOK_DIR/<point>.go.
_HOOKED = """
import os, runpy, signal, sys, time
from pathlib import Path

hook, folder = os.environ["HOOK"], Path(os.environ["HOOK_DIR"])


def pause(point):
    (folder / f"{point}.paused").touch()
    deadline = time.monotonic() + 300
    while not (folder / f"{point}.go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"hook: nobody released {point}")
        time.sleep(0.05)


if hook == "enter":
    import training.registry.versions as registry

    rollback = registry.rollback

    def entered_then_rollback(*args, **kwargs):
        (folder / "rollback.entered").touch()
        return rollback(*args, **kwargs)

    registry.rollback = entered_then_rollback
elif hook == "smoke":
    import training.lifecycle as lifecycle

    checked = lifecycle.smoke_test_version

    def smoke_then_pause(*args, **kwargs):
        checked(*args, **kwargs)
        pause("smoke")

    lifecycle.smoke_test_version = smoke_then_pause
else:
    from mlflow.tracking import MlflowClient

    set_alias, set_tag = MlflowClient.set_registered_model_alias, MlflowClient.set_registered_model_tag
    done = []

    def between():
        if done:
            return
        done.append(True)
        if hook == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        pause("between")

    def alias(self, name, alias, version):
        set_alias(self, name, alias, version)
        if alias == "champion":
            between()

    def tag(self, name, key, value):
        set_tag(self, name, key, value)
        if key == "champion_history":
            between()

    MlflowClient.set_registered_model_alias = alias
    MlflowClient.set_registered_model_tag = tag

sys.argv = ["retain", *sys.argv[1:]]
runpy.run_module("serving.cli", run_name="__main__")
"""


class Cli:
    """A real ``retain`` process (optionally hooked); output goes to files."""

    def __init__(self, args: list[str], work: Path, hook: str | None = None) -> None:
        env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
        env.setdefault("PYTHONPATH", str(REPO_ROOT))
        tag = f"{args[0]}-{hook or 'plain'}-{time.monotonic_ns()}"
        self._out, self._err = work / f"{tag}.out", work / f"{tag}.err"
        command = [sys.executable, "-m", "serving.cli", *args]
        if hook is not None:
            env.update({"HOOK": hook, "HOOK_DIR": str(work)})
            command = [sys.executable, "-c", _HOOKED, *args]
        with self._out.open("w") as out, self._err.open("w") as err:
            self.process = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=err)

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # ours; never left running past the test
            self.process.wait()
            raise
        return code, " ".join((self._out.read_text() + self._err.read_text()).split())


def _wait_for(path: Path, proc: Cli, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.process.poll() is not None:
            raise AssertionError(f"process ended before {path.name}: {proc.finish()}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A sqlite store in a working directory with one real trained run: (workdir, run id)."""
    work = tmp_path_factory.mktemp("races")
    raw = generate_purchase_log(150, seed=3, start="2023-01-01", end="2023-12-31").log
    data = work / "log.parquet"
    raw.to_parquet(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        outcome = train_and_register(
            data,
            "2023-11-01",
            30,
            serving=SERVING_PARTS,
            registered_model="seed",
            models_params=SMALL_MODELS,
            console=Console(quiet=True),
        )
        yield work, outcome.run_id


def _champion_v2_with_v3_waiting(work: Path, run_id: str, name: str) -> MlflowClient:
    """``name``: v1 then v2 promoted (history [1, 2]), v3 the challenger; all the same run,
    so every gate check compares equal figures and passes."""
    tracking_store.configure_tracking(f"sqlite:///{work / 'mlflow.db'}", create=False)
    for version in ("1", "2", "3"):
        assert registry.register_challenger(run_id, name=name) == version
        if version != "3":
            decision = promote_challenger(serving=SERVING_PARTS, name=name, skip=("baselines",))
            assert decision.promoted, decision.reasons
    client = MlflowClient()
    assert json.loads(client.get_registered_model(name).tags["champion_history"]) == ["1", "2"]
    return client


def _state(client: MlflowClient, name: str) -> tuple[str | None, list[str]]:
    model = client.get_registered_model(name)
    champion = model.aliases.get("champion")
    return (None if champion is None else str(champion)), json.loads(model.tags["champion_history"])


def test_rollback_during_a_promotions_checks_is_not_lost(store: tuple[Path, str]) -> None:
    work, run_id = store
    name = "race-smoke"
    client = _champion_v2_with_v3_waiting(work, run_id, name)
    promote = Cli(["promote", "--skip-check", "baselines", "--name", name], work, "smoke")
    _wait_for(work / "smoke.paused", promote)  # v3 checked against champion v2, not yet moved
    code, out = Cli(["rollback", "--name", name], work).finish()
    assert code == 0 and "champion of 'race-smoke' is now version 1" in out, out
    (work / "smoke.go").touch()
    code, out = promote.finish()
    # the gate judged v3 against v2, which is no longer champion: refused, nothing moved
    assert code == 1, out
    assert "the champion changed from v2 to v1 while challenger v3 was being checked" in out
    assert _state(client, name) == ("1", ["1"])


def test_rollback_waits_for_a_promotion_in_progress(store: tuple[Path, str]) -> None:
    work, run_id = store
    name = "race-between"
    client = _champion_v2_with_v3_waiting(work, run_id, name)
    promote = Cli(["promote", "--skip-check", "baselines", "--name", name], work, "between")
    _wait_for(work / "between.paused", promote)  # halfway through writing the promotion
    rollback = Cli(["rollback", "--name", name], work, "enter")
    _wait_for(work / "rollback.entered", rollback)
    # a few registry reads and writes take well under a second: still running means waiting
    time.sleep(5)
    assert rollback.process.poll() is None, rollback.finish()
    (work / "between.go").touch()
    code, out = promote.finish()
    assert code == 0 and "PROMOTED" in out, out
    # the rollback ran after the whole promotion: it undoes exactly that promotion
    code, out = rollback.finish()
    assert code == 0 and "is now version 2" in out, out
    assert _state(client, name) == ("2", ["1", "2"])


def test_promote_killed_between_its_two_writes_then_rollback(store: tuple[Path, str]) -> None:
    work, run_id = store
    name = "race-kill"
    client = _champion_v2_with_v3_waiting(work, run_id, name)
    code, out = Cli(["promote", "--skip-check", "baselines", "--name", name], work, "kill").finish()
    assert code == -9, out
    champion, history = _state(client, name)
    # whatever the kill left, rollback lands on a version that really was champion before
    # the current one, and never on one that was not champion at all
    code, out = Cli(["rollback", "--name", name], work).finish(timeout=120)
    assert code == 0, out
    after, _ = _state(client, name)
    if champion == "3":  # the alias moved before the kill: roll back from v3 to v2
        assert after == "2", (champion, history, out)
    else:  # the alias never moved: v3 was never champion, so back from v2 to v1
        assert champion == "2" and after == "1", (champion, history, out)
    assert after != "3"
    # and the lock the killed promotion held did not block that rollback for good
    assert registry.alias_version("champion", name=name) == after
