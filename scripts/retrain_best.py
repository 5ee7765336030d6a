"""Confirm a search's winners over seeds: `python scripts/retrain_best.py` (see --help)."""

from tune_mnist.publish.retrain import main

if __name__ == "__main__":
    raise SystemExit(main())
