"""Jobs: commands that read and write files (predict on a cluster, ...), above the core and the engine."""
