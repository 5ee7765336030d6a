"""The search wing: search spaces, the Ray Tune trainable and driver (`tuner`), the journal and
the tables it rebuilds, the report pages, and the one door to Ray's internals (`ray_door`).
`scripts/search.py` is its command (`command.py`). Importing it does nothing."""
