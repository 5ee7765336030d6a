"""Search tiny MNIST CNNs: `python scripts/search.py --gpus 4` (see --help)."""

from tune_mnist.search.command import main

if __name__ == "__main__":
    raise SystemExit(main())
