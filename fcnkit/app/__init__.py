"""Jobs: what a command does end to end (read files, run the engine or the core, write outputs).

``train``, ``evaluate``, ``predict`` (files), ``convert``, ``rf``, ``report``, ``demo``,
``init_from``, ``cluster_predict`` (predict on a Dask cluster) and the tasks (:mod:`fcnkit.app.tasks`).
Each module is one job; the CLI calls them.
"""
