"""`python -m tune_mnist.predict --model <file or folder> image.png ...`: the command; the
library is tune_mnist.publish.predict."""

from tune_mnist.publish.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
