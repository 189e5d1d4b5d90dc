"""Labels, models, backtest, packaging and MLflow tracking of retain.

OpenMP threads wait passively here (``OMP_WAIT_POLICY=PASSIVE`` unless the environment says
otherwise): LightGBM's threads otherwise spin at every barrier, and on a machine whose cores
are busy a spinning thread takes the core its sibling needs; CDNOW training took 18x its
quiet time beside other work. OpenMP reads the variable once, when LightGBM's library loads,
which is after this package's import.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
