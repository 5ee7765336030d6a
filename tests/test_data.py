import gzip
import shutil

import pytest
import torch

from tune_mnist.train import data as data_mod
from tune_mnist.train.data import FILES, DataError, load_mnist, resolve_data_dir


def test_real_mnist_facts(mnist):
    assert mnist.train_x.shape == (60000, 28, 28) and mnist.train_x.dtype == torch.uint8
    assert mnist.test_x.shape == (10000, 28, 28)
    assert torch.bincount(mnist.train_y).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]  # fmt: skip
    assert torch.bincount(mnist.test_y).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]  # fmt: skip
    assert mnist.train_y[:5].tolist() == [5, 0, 4, 1, 9]
    pixels = mnist.train_x.float() / 255
    assert pixels.mean().item() == pytest.approx(0.13066, abs=1e-4)
    assert pixels.std().item() == pytest.approx(0.3081, abs=1e-3)


def test_subset_takes_the_first_samples(mnist):
    sub = mnist.subset(100, 50)
    assert len(sub.train_y) == 100 and len(sub.test_y) == 50
    assert torch.equal(sub.train_x, mnist.train_x[:100])


@pytest.fixture
def copied(tmp_path):
    """A writable copy of the real files, raw (decompressed) in torchvision's layout."""
    source = resolve_data_dir()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        found = data_mod.find_file(source, name)
        if found.suffix == ".gz":
            (raw / name).write_bytes(gzip.decompress(found.read_bytes()))
        else:
            shutil.copy(found, raw / name)
    return tmp_path


def test_reads_raw_files_in_torchvision_layout(copied, mnist):
    loaded = load_mnist(copied, download_ok=False)
    assert torch.equal(loaded.test_y, mnist.test_y)


def test_truncated_file_is_named(copied):
    path = copied / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*truncated"):
        load_mnist(copied, download_ok=False)


def test_corrupted_pixels_are_caught(copied):
    path = copied / "MNIST" / "raw" / "train-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[20000] ^= 0xFF  # one flipped byte in the pixel data: counts and shape still fine
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*corrupted"):
        load_mnist(copied, download_ok=False)


def test_wrong_magic_is_caught(copied):
    path = copied / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[3] = 0x03
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*magic"):
        load_mnist(copied, download_ok=False)


def test_broken_gzip_is_named(tmp_path):
    source = resolve_data_dir()
    for name in FILES:
        shutil.copy(data_mod.find_file(source, name), tmp_path / f"{name}.gz")
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path, download_ok=False)


def test_offline_without_files_says_where_and_what_to_set(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", no_network)
    monkeypatch.delenv("TUNE_MNIST_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        load_mnist()  # the user cache: a download is tried, and fails
    message = str(info.value)
    assert str(tmp_path / "cache") in message and "TUNE_MNIST_DATA" in message
    assert "network is unreachable" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()  # the failed download left no empty folders


def test_a_missing_data_dir_is_refused_not_created(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_mnist(tmp_path / "nope" / "mnist")
    assert "\n" not in str(info.value) and not (tmp_path / "nope").exists()


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNE_MNIST_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("TUNE_MNIST_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "tune_mnist" / "mnist"


def test_a_device_copy_is_kept_for_the_same_data_only(small):
    from tune_mnist.train.data import on_device

    meta = torch.device("meta")  # takes the accelerator path on a machine without one
    first = on_device(small, meta)
    assert first.device == meta and on_device(small, meta) is first
    assert on_device(small.subset(1000, 1000), meta) is not first  # other data: a new copy
    changed = small.subset()
    changed.train_y = changed.train_y.clone()
    changed.train_y[0] = (changed.train_y[0] + 1) % 10  # one label differs
    assert on_device(changed, meta) is not on_device(small, meta)
    assert on_device(small, torch.device("cpu")) is small
