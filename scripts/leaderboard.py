"""Tables and picture of every confirmed model: `python scripts/leaderboard.py` (see --help)."""

from tune_mnist.publish.leaderboard import main

if __name__ == "__main__":
    raise SystemExit(main())
