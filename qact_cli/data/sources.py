"""Where the published datasets come from (docs/data.md, "Sources and checksums").

Each `Source` is one archive: its URLs (tried in order when one cannot be reached), its md5, the
top folder it unpacks to and the folder name qact expects under the data root, and the md5 of
each file inside where a public reference gives them (paths relative to that folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    name: str
    urls: tuple[str, ...]
    filename: str  # the archive's name under <root>/.downloads/
    md5: str | None  # of the archive
    archive_folder: str  # the single top folder inside the archive
    folder: str  # final name under the data root
    files: dict[str, str] = field(default_factory=dict)  # relative path -> md5
    size: int | None = None  # bytes of the archive, when known (for messages only)
    manual: str | None = None  # set when there is no single archive to fetch: what to do instead


# CIFAR: torchvision's URLs and checksums (torchvision/datasets/cifar.py).
CIFAR10 = Source(
    name="cifar10",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    filename="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    archive_folder="cifar-10-batches-py",
    folder="cifar-10-batches-py",
    files={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
)

CIFAR100 = Source(
    name="cifar100",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    filename="cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    archive_folder="cifar-100-python",
    folder="cifar-100-python",
    files={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
)

# CIFAR-10-C / CIFAR-100-C: Hendrycks & Dietterich's Zenodo records; archive md5s from Zenodo,
# per-file md5s from torch-uncertainty's `ctest_list`.
_C_NAMES = (
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
    "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "labels", "motion_blur",
    "pixelate", "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
)
_CIFAR10C_MD5 = (
    "0a81ef75e0b523c3383219c330a85d48", "3c8262171c51307f916c30a3308235a8", "7d1322666342a0702b1957e92f6254bc",
    "9421657c6cd452429cf6ce96cc412b5f", "7b397314b5670f825465fbcd1f6e9ccd", "31f6ab3bce1d9934abfb0cc13656f141",
    "c33370155bc9b055fb4a89113d3c559d", "ecaf8b9a2399ffeda7680934c33405fd", "7361fb4019269e02dbf6925f083e8629",
    "2090e01c83519ec51427e65116af6b1a", "2b9cc4c864e0193bb64db8d7728f8187", "c439b113295ed5254878798ffe28fd54",
    "fffa5f852ff7ad299cfe8a7643f090f4", "0f14f7e2db14288304e1de10df16832f", "1cfae0964219c5102abbb883e538cc56",
    "3a7239bb118894f013d9bf1984be7f11", "bb238de8555123da9c282dea23bd6e55", "8a5a3903a7f8f65b59501a6093b4311e",
    "ef00b87611792b00df09c0b0237a1e30", "6ea8e63f1c5cdee1517533840641641b",
)
_CIFAR100C_MD5 = (
    "f22d7195aecd6abb541e27fca230c171", "322bb385f1d05154ee197ca16535f71e", "d923e3d9c585a27f0956e2f2ad832564",
    "a0792bd6581f6810878be71acedfc65a", "4efc7ebd5e82b028bdbe13048e3ea564", "3a39c6823bdfaa0bf8b12fe7004b8117",
    "5204ba0d557839772ef5a4196a052c3e", "ecc4d366eac432bdf25c024086f5e97d", "0bf384f38e5ccbf8dd479d9059b913e1",
    "3b3c210ddfa0b5cb918ff4537a429fef", "c851b7f1324e1d2ffddeb76920576d11", "bb4026e9ce52996b95f439544568cdb2",
    "732a7e2e54152ff97c742d4c388c5516", "96c00c60f144539e14cffb02ddbd0640", "c0697e9fdd646916a61e9c312c77bf6b",
    "b0a1fa6e1e465a747c1b204b1914048a", "0237be164583af146b7b144e73b43465", "12ccf41d62564d36e1f6a6ada5022728",
    "e3f215b1a0f9fd9fd6f0d1cf94a7ce99", "0204613400c034a81c4830d5df81cb82",
)

CIFAR10C = Source(
    name="cifar10c",
    urls=("https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1",
          "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar?download=1"),
    filename="CIFAR-10-C.tar",
    md5="56bf5dcef84df0e2308c6dcbcbbd8499",
    archive_folder="CIFAR-10-C",
    folder="CIFAR-10-C",
    files={f"{n}.npy": m for n, m in zip(_C_NAMES, _CIFAR10C_MD5)},
    size=2_918_471_680,
)

CIFAR100C = Source(
    name="cifar100c",
    urls=("https://zenodo.org/records/3555552/files/CIFAR-100-C.tar?download=1",
          "https://zenodo.org/record/3555552/files/CIFAR-100-C.tar?download=1"),
    filename="CIFAR-100-C.tar",
    md5="11f0ed0f1191edbf9fa23466ae6021d3",
    archive_folder="CIFAR-100-C",
    folder="CIFAR-100-C",
    files={f"{n}.npy": m for n, m in zip(_C_NAMES, _CIFAR100C_MD5)},
)

# Tiny-ImageNet-200 (cs231n; the archive's md5).
TINYIMAGENET = Source(
    name="tinyimagenet",
    urls=("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
    filename="tiny-imagenet-200.zip",
    md5="90528d7ca1a48142e341f4ef8d21d0de",
    archive_folder="tiny-imagenet-200",
    folder="tiny-imagenet-200",
)

# Tiny-ImageNet-C: the tar of the 15 benchmark corruptions. Its md5 is the one torch-uncertainty
# checks against Zenodo record 8206060, so that record comes first; Hendrycks' own record 2536630
# is the fallback (if its copy differed, the md5 check would refuse it). The 4 extra corruptions
# are a separate tar (record 8206060, Tiny-ImageNet-C-extra.tar, md5 0db0588d243cf403ef93449ec52b70eb)
# whose internal layout is unverified, so it is not fetched.
TINYIMAGENETC = Source(
    name="tinyimagenetc",
    urls=("https://zenodo.org/records/8206060/files/Tiny-ImageNet-C.tar?download=1",
          "https://zenodo.org/records/2536630/files/Tiny-ImageNet-C.tar?download=1"),
    filename="Tiny-ImageNet-C.tar",
    md5="f9c9a9dbdc11469f0b850190f7ad8be1",
    archive_folder="Tiny-ImageNet-C",
    folder="Tiny-ImageNet-C",
    size=1_794_775_040,
)

# MNIST-C (Mu & Gilmer 2019): Zenodo record 3239543. The md5 is the one that two independent
# public loaders check (no checksum is published with the record).
MNISTC = Source(
    name="mnistc",
    urls=("https://zenodo.org/records/3239543/files/mnist_c.zip?download=1",
          "https://zenodo.org/record/3239543/files/mnist_c.zip?download=1"),
    filename="mnist_c.zip",
    md5="4b34b33045869ee6d424616cd3a65da3",
    archive_folder="mnist_c",
    folder="mnist_c",
)

# ImageNet-C: five tars of 7-21 GB, one per corruption family, on Zenodo record 2235448
# (md5s as pytorch-ood lists them). Too large to fetch silently.
IMAGENETC_TARS = {
    "noise.tar": "e80562d7f6c3f8834afb1ecf27252745",
    "blur.tar": "2d8e81fdd8e07fef67b9334fa635e45c",
    "weather.tar": "33ffea4db4d93fe4a428c40a6ce0c25d",
    "digital.tar": "89157860d7b10d5797849337ca2e5c03",
    "extra.tar": "d492dfba5fc162d8ec2c3cd8ee672984",
}
IMAGENETC = Source(
    name="imagenetc",
    urls=tuple(f"https://zenodo.org/records/2235448/files/{t}?download=1" for t in IMAGENETC_TARS),
    filename="",
    md5=None,
    archive_folder="",
    folder="ImageNet-C",
    manual=(
        "ImageNet-C is about 62 GB in five tars and is not downloaded automatically: fetch "
        + ", ".join(IMAGENETC_TARS)
        + " from https://zenodo.org/records/2235448 (md5s: "
        + ", ".join(f"{t} {m}" for t, m in IMAGENETC_TARS.items())
        + "), extract them all into {root}/ImageNet-C/ so that it holds <corruption>/<severity>/<wnid>/*.JPEG"
    ),
)

SOURCES: dict[str, Source] = {s.name: s for s in (CIFAR10, CIFAR100, CIFAR10C, CIFAR100C, TINYIMAGENET, TINYIMAGENETC, MNISTC, IMAGENETC)}
