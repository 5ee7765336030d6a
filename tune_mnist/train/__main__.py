"""`python -m tune_mnist.train`: see tune_mnist.train.command."""

from tune_mnist.train.command import main

raise SystemExit(main())
