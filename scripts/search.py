"""Search tiny MNIST CNNs, race the best, and with --confirm N publish the pick:
`python scripts/search.py --gpus 4 --confirm 5` (see --help)."""

from tune_mnist.chain import main

if __name__ == "__main__":
    raise SystemExit(main())
