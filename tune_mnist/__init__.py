"""tune_mnist: tiny MNIST CNNs and a Ray Tune search for the smallest ones that pass 99.4%.

Importing the package does nothing: submodules load on first use.
"""

__all__ = ["load_model"]


def load_model(path, device: str = "cpu"):
    """The trained model saved at `path` (a .pt file or its folder), in eval mode."""
    # lazy: importing the package loads nothing
    from tune_mnist.train.modelfile import load_model as _load

    return _load(path, device)
