"""`python -m tune_mnist.report results/<name>`: the command; the library is
tune_mnist.search.report."""

from tune_mnist.search.report import main

if __name__ == "__main__":
    raise SystemExit(main())
