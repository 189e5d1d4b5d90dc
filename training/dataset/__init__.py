"""What the models are fitted on: labels at a cutoff (``labels``), the stacked training
snapshots (``snapshot_builder``, ``snapshots``; on Dask: ``cluster_snapshots``) and
the uplift training set (``uplift_data``).
"""
