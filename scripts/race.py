"""Race a search's best trials on more validation runs: `python scripts/race.py --results DIR`."""

from tune_mnist.publish.race_command import main

if __name__ == "__main__":
    raise SystemExit(main())
