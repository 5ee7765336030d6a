"""Race a search's best trials on validation seeds: `python scripts/race.py --results DIR`."""

from tune_mnist.publish.race_command import main

if __name__ == "__main__":
    raise SystemExit(main())
