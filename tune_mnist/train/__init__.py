"""The training wing: one typed config, the MNIST data, augmentation, the models, and the one
training loop for K >= 1 seeds (`loop.train`). `python -m tune_mnist.train` is its command
(`command.py`). Nothing here knows Ray. Importing it does nothing."""
