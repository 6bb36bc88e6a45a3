"""Natural test images shared by the corruption tests of several folders."""

import numpy as np


def natural(size: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """Crops of scikit-image's bundled photographs, resized (BOX) to `size`."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee()]
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
        a = photos[i % len(photos)]
        side = rs.randint(min(a.shape[:2]) // 2, min(a.shape[:2]) + 1)
        y, x = rs.randint(0, a.shape[0] - side + 1), rs.randint(0, a.shape[1] - side + 1)
        out.append(np.asarray(Image.fromarray(a[y:y + side, x:x + side]).resize(size[::-1], Image.BOX)))
    return np.stack(out)
