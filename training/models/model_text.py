"""LightGBM model texts are first loaded in a child process, so a malformed one is an error.

Why: on some malformed texts LightGBM does not raise, it aborts the whole process
(``terminate called without an active exception``, SIGABRT, exit 134), e.g. a tree whose
``num_leaves`` is larger than its arrays. The artifact's hashes do not help when the file
was re-hashed. Parsing the format again in Python would only cover the faults we thought
of; a child that loads the very same strings catches every crash, at the cost of one short
process per artifact load (Python plus ``import lightgbm``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Mapping

from features.errors import InputError

PROBE_TIMEOUT_SECONDS = 300.0

# Reads {"name": "model text", ...} as JSON from stdin; names each text before loading it,
# so the parent knows which one a crash happened on.
_PROBE = """
import json, sys
import lightgbm
for name, text in json.load(sys.stdin).items():
    print(name, flush=True)
    try:
        lightgbm.Booster(model_str=text)
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print("error:", lines[0], flush=True)
        sys.exit(1)
print("ok", flush=True)
"""


class ModelTextError(InputError):
    """A LightGBM model text that LightGBM cannot load; the message names the file.

    A user error (one ``error:`` line): the artifact the user pointed at is broken.
    """


def check_model_texts(texts: Mapping[str, str]) -> None:
    """Load every ``{file name: model text}`` with LightGBM in a child process.

    Raises :class:`ModelTextError` naming the first text LightGBM rejects or dies on.
    """
    if not texts:
        return
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        input=json.dumps(dict(texts)),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
        check=False,
    )
    lines = done.stdout.splitlines()
    if done.returncode == 0 and lines[-1:] == ["ok"]:
        return
    names = [line for line in lines if line in texts]
    name = names[-1] if names else "a model file"
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if errors:
        raise ModelTextError(f"model file {name} is not a valid LightGBM model: {errors[-1]}")
    if done.returncode < 0:
        how = f"LightGBM crashed loading it ({signal.Signals(-done.returncode).name})"
    else:
        how = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    raise ModelTextError(f"model file {name} is not a valid LightGBM model: {how}")
