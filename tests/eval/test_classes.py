"""Model outputs matched to dataset classes: by name when both sides know names, else by index."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from qact_cli.data import get_dataset
from qact_cli.errors import InputError
from qact_cli.eval.classes import label_map


def _tree(root, classes, per_class=2):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    return get_dataset(f"folder:{root}")


def _model(names=None, k=None):
    return {"num_classes": k or len(names), "classes": names}


def test_digit_subset_folder_maps_to_its_digits(tmp_path):
    ds = _tree(tmp_path / "d", ["9", "5", "7"])
    m = label_map(_model([str(i) for i in range(10)]), ds, "digits.pt")
    assert ds.classes == ["5", "7", "9"] and m.tolist() == [5, 7, 9] and m.dtype == np.int64
    labels = np.asarray(ds.split("test").labels)
    assert sorted(m[labels].tolist()) == [5, 5, 7, 7, 9, 9]


def test_shuffled_names(tmp_path):
    ds = _tree(tmp_path / "s", ["dog", "cat", "bird"])  # folder order: bird, cat, dog
    m = label_map(_model(["cat", "dog", "bird", "frog"]), ds, "m")
    assert m.tolist() == [2, 0, 1]
    assert label_map(_model(["bird", "cat", "dog"]), ds, "m") is None  # same order: identity


def test_unknown_class_names_both_lists(tmp_path):
    ds = _tree(tmp_path / "u", ["cat", "zebra"])
    with pytest.raises(InputError, match=r"does not know: zebra \(dataset classes: cat, zebra; model classes: cat, dog"):
        label_map(_model(["cat", "dog"]), ds, "m")


def test_wnid_folders_against_an_imagenet_model():
    from qact_cli.models.classnames import dataset_class_names, imagenet_wnids

    wnids = list(imagenet_wnids())
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"
    full = SimpleNamespace(name="imagenetc", classes=wnids, num_classes=1000, exact_classes=True)
    words = dataset_class_names("imagenet")  # torchvision's categories
    assert label_map(_model(words), full, "m") is None and label_map(_model(None, 1000), full, "m") is None
    # a tree with only some classes: each wnid goes to its ImageNet index, named or not
    part = SimpleNamespace(name="imagenetc", classes=[wnids[1], wnids[7], wnids[999]], num_classes=3, exact_classes=False)
    assert label_map(_model(words), part, "m").tolist() == [1, 7, 999]
    assert label_map(_model(None, 1000), part, "m").tolist() == [1, 7, 999]
    odd = SimpleNamespace(name="imagenetc", classes=[wnids[1], "n99999999"], num_classes=2, exact_classes=False)
    with pytest.raises(InputError, match="does not know: n99999999"):
        label_map(_model(words), odd, "m")
    with pytest.raises(InputError, match="10-class model but dataset imagenetc has 1000 classes"):
        label_map(_model(words[:10]), full, "m")
    shuffled = wnids[::-1]  # a model that names its classes by wnid is matched by name
    assert label_map(_model(shuffled), full, "m").tolist() == list(range(999, -1, -1))
    tiny = SimpleNamespace(name="tinyimagenetc", classes=wnids[:200], num_classes=200, exact_classes=True)
    assert label_map(_model([f"w{i}" for i in range(200)]), tiny, "m") is None  # by index, equal counts


def test_by_index_without_names():
    ds = SimpleNamespace(name="npy:x", classes=None, num_classes=4, exact_classes=False)
    assert label_map(_model(None, 10), ds, "m") is None  # a prefix subset of the classes
    assert label_map(_model([str(i) for i in range(10)]), ds, "m") is None
    exact = SimpleNamespace(name="cifar100c", classes=None, num_classes=100, exact_classes=True)
    with pytest.raises(InputError, match="10-class model but dataset cifar100c has 100 classes"):
        label_map(_model(None, 10), exact, "m")
