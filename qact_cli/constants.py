"""Per-channel normalisation statistics (RGB, on the 0..1 scale), in one place for datasets and models.

A leaf module (no qact imports), so that models and datasets can both use it without importing each other.
"""

# torchvision's and timm's default, DINOv2's too (dinov2/data/transforms.py)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# a 1-channel (grayscale) model's default: ImageNet's statistics weighted as the images are converted
# (Pillow's "L": 0.299 R + 0.587 G + 0.114 B), e.g. 0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406
IMAGENET_MEAN_L = (0.4590,)
IMAGENET_STD_L = (0.2256,)
# the training sets' own statistics
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
