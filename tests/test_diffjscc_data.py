"""The CIFAR-10 python-pickle loader and the Fashion-MNIST IDX loader, on fixtures written in the
released formats (and on Debian's installed Fashion-MNIST when it is present)."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from gensemcom.data.cifar10 import CIFAR10, read_cifar_batch, write_cifar_batch
from gensemcom.data.fashion_mnist import DEBIAN_ROOT, FashionMNIST, read_idx, write_idx


def _cifar_folder(tmp_path, n: int = 4, skip: tuple[str, ...] = ()):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        expected[name] = (imgs, labels)
        if name not in skip:
            write_cifar_batch(root / name, imgs, labels, batch_label=name)
    return root, expected


def test_cifar_pickle_layout_and_items(tmp_path):
    root, expected = _cifar_folder(tmp_path)
    # the released layout: bytes keys, data rows = R plane, G plane, B plane (1024 each)
    with open(root / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    imgs, labels = expected["test_batch"]
    assert raw[b"data"].shape == (4, 3072) and raw[b"labels"] == labels
    assert np.array_equal(raw[b"data"][1, 1024:2048].reshape(32, 32), imgs[1, :, :, 1])
    ds = CIFAR10(tmp_path, split="test")  # the parent folder works too
    assert len(ds) == 4
    item = ds[1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    torch.testing.assert_close(item["image"], torch.from_numpy(imgs[1]).permute(2, 0, 1).float() / 127.5 - 1)
    assert item["class"].item() == labels[1] and (item["label"] == labels[1]).all()
    train = CIFAR10(root, split="train")
    assert len(train) == 20
    assert train[5]["class"].item() == expected["data_batch_2"][1][1]
    assert len(CIFAR10(root, "train", num_images=3)) == 3


def test_cifar_missing_batch_and_bad_files(tmp_path):
    root, _ = _cifar_folder(tmp_path, skip=("data_batch_3",))
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        CIFAR10(root, split="train")
    assert len(CIFAR10(root, split="test")) == 4
    with pytest.raises(FileNotFoundError, match="not found"):
        CIFAR10(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be"):
        CIFAR10(root, split="val")
    (root / "bad").write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        read_cifar_batch(root / "bad")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "evil").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        read_cifar_batch(root / "evil")


def test_cifar_release_archive(tmp_path):
    import tarfile

    root, expected = _cifar_folder(tmp_path, skip=("data_batch_5",))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    test = CIFAR10(archive, split="test")
    assert len(test) == 4 and test[2]["class"].item() == expected["test_batch"][1][2]
    with pytest.raises(FileNotFoundError, match="missing data_batch_5"):
        CIFAR10(archive, split="train")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="neither a CIFAR-10 folder nor a readable tar"):
        CIFAR10(tmp_path / "junk.tar.gz")


def _fmnist_folder(tmp_path, n: int = 5, gz: bool = True):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    for split, (i_name, l_name) in {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                                    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}.items():
        write_idx(tmp_path / (i_name + ".gz"), imgs)
        write_idx(tmp_path / (l_name + ".gz"), labels)
    if not gz:
        for p in list(tmp_path.glob("*.gz")):
            p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
            p.unlink()
    return imgs, labels


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_padded_and_resized(tmp_path, gz):
    imgs, labels = _fmnist_folder(tmp_path, gz=gz)
    assert np.array_equal(read_idx(next(tmp_path.glob("train-images*"))), imgs)
    ds = FashionMNIST(tmp_path, split="test")
    item = ds[2]
    assert item["image"].shape == (3, 32, 32)
    # zero padding: a black (-1) border of 2 pixels, the 28x28 image in the middle, gray in 3 channels
    assert (item["image"][:, :2] == -1).all() and (item["image"][:, :, -2:] == -1).all()
    torch.testing.assert_close(item["image"][0, 2:30, 2:30], torch.from_numpy(imgs[2]).float() / 127.5 - 1)
    assert torch.equal(item["image"][0], item["image"][2])
    assert item["class"].item() == labels[2] and item["label"].shape == (32, 32)
    resized = FashionMNIST(tmp_path, split="train", resize="bilinear", channels=1)[2]["image"]
    assert resized.shape == (1, 32, 32) and resized.min() >= -1 and resized.max() <= 1
    assert abs(resized.mean().item() - (torch.from_numpy(imgs[2]).float() / 127.5 - 1).mean().item()) < 0.05


def test_fashion_mnist_errors(tmp_path):
    _fmnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        FashionMNIST(tmp_path, split="test")
    with pytest.raises(ValueError, match="size >= 28"):
        FashionMNIST(tmp_path, split="train", size=16)
    (tmp_path / "junk").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "junk")


@pytest.mark.skipif(not DEBIAN_ROOT.is_dir(), reason="dataset-fashion-mnist (Debian) not installed")
def test_debian_fashion_mnist_installed():
    test = FashionMNIST(split="test")
    assert len(test) == 10000
    counts = np.bincount(test.labels, minlength=10)
    assert (counts == 1000).all()  # the test set is balanced
    item = test[0]
    assert item["image"].shape == (3, 32, 32) and (item["image"][:, 0] == -1).all()
