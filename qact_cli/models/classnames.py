"""Class names of the standard datasets, known without downloading anything, so a model card can say
`class_names: cifar10` and a model can be matched by name to a dataset that lists its classes.

CIFAR-10 / CIFAR-100 names are the `label_names` / `fine_label_names` of the published batches.meta
files (in label order); ImageNet's are the categories torchvision's weights carry (index order).
`imagenet_wnids.txt` lists the 1000 ILSVRC-2012 WordNet ids in the standard class-index order (sorted).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

DIGITS = [str(i) for i in range(10)]


def _imagenet() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# a corrupted set has the classes of its clean set
_NAMES = {"digits": lambda: DIGITS, "mnist": lambda: DIGITS, "mnistc": lambda: DIGITS,
          "cifar10": lambda: CIFAR10, "cifar10c": lambda: CIFAR10, "cifar100": lambda: CIFAR100,
          "cifar100c": lambda: CIFAR100, "imagenet": _imagenet}


def known_datasets() -> list[str]:
    return sorted(_NAMES)


def dataset_class_names(name: str) -> list[str] | None:
    """The class names of dataset `name` (`gen:` prefix allowed), or None when not known offline."""
    name = name.split(":", 1)[1] if name.startswith("gen:") else name
    make = _NAMES.get(name)
    return list(make()) if make else None


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    return tuple((Path(__file__).with_name("imagenet_wnids.txt")).read_text().split())
