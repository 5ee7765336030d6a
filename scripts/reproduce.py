"""Rerun a confirmation's first epochs and compare bit for bit: `python scripts/reproduce.py`."""

from tune_mnist.publish.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
