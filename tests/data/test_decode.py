"""The decode path of image-folder cells chosen by the evaluation device (data/decode.py), with the GPU
decoder replaced by torchvision's CPU one; the real nvJPEG decode is checked in tests/test_cuda.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import qact_cli.data.decode as decode
from qact_cli.data.base import ArraySource, FolderSource, scan_folder
from qact_cli.errors import InputError
from qact_cli.eval.protocol import cell_batches


def write_tree(root, n=7, ext="JPEG", size=(12, 10)):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(img).save(d / f"{i:03d}.{ext}", "JPEG" if ext.lower() in ("jpeg", "jpg") else "PNG")
    samples, classes = scan_folder(root)
    return FolderSource(samples, classes, "tree", root)


@pytest.fixture
def fake_gpu(monkeypatch):
    """nvJPEG replaced by torchvision's CPU decoder; records each call's batch size and device."""
    from torchvision.io import ImageReadMode, decode_jpeg

    calls = []

    def fake(data, device):
        calls.append((len(data), torch.device(device).type))
        return decode_jpeg(data, mode=ImageReadMode.RGB)

    monkeypatch.setattr(decode, "_gpu_jpeg", lambda: fake)
    return calls


def test_decoder_is_chosen_by_device_and_source(tmp_path, fake_gpu):
    jpeg = write_tree(tmp_path / "j")
    png = write_tree(tmp_path / "p", ext="png")
    arrays = ArraySource(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4), num_classes=1)
    assert decode.batch_decoder(jpeg, "cpu") is None and decode.batch_decoder(jpeg, None) is None
    assert decode.batch_decoder(jpeg, torch.device("cpu")) is None
    assert decode.batch_decoder(png, "cuda") is None and decode.batch_decoder(arrays, "cuda") is None
    assert callable(decode.batch_decoder(jpeg, "cuda")) and callable(decode.batch_decoder(jpeg, torch.device("cuda:1")))
    assert callable(decode.batch_decoder(jpeg.subset(np.array([1, 3])).subset(np.array([1])), "cuda"))
    assert fake_gpu == []  # choosing decodes nothing


def test_no_decoder_in_torchvision_keeps_the_cpu_path(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "_gpu_jpeg", lambda: None)
    assert decode.batch_decoder(write_tree(tmp_path), "cuda") is None


def test_gpu_path_batches_like_the_cpu_path(tmp_path, fake_gpu):
    source = write_tree(tmp_path)
    cpu = list(cell_batches(source, 3, workers=0))
    gpu = list(cell_batches(source, 3, workers=0, device="cuda"))
    assert fake_gpu == [(3, "cuda"), (3, "cuda"), (1, "cuda")]  # one batched call per batch, for the device
    assert len(cpu) == len(gpu) == 3
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.dtype == torch.uint8 and xg.shape == xc.shape == (len(yc), 3, 12, 10)
        assert torch.equal(yc, yg)
        assert (xg.int() - xc.int()).abs().max() <= 1  # libjpeg-turbo both, PIL and torchvision


def test_gpu_path_reads_the_rows_of_nested_subsets(tmp_path, fake_gpu):
    source = write_tree(tmp_path, n=9)
    part = source.subset(np.array([0, 2, 4, 6, 8])).subset(np.array([1, 3, 4]))  # --limit, then a torchrun shard
    (xc, yc), = cell_batches(part, 8, workers=0)
    (xg, yg), = cell_batches(part, 8, workers=0, device="cuda")
    assert torch.equal(yc, yg) and yc.tolist() == [source.labels[i] for i in (2, 6, 8)]
    assert (xg.int() - xc.int()).abs().max() <= 1


def test_bad_or_mixed_batches_fall_back_to_the_cpu_path(tmp_path, fake_gpu, monkeypatch):
    source = write_tree(tmp_path, n=4)
    moved = []
    monkeypatch.setattr(decode, "_cpu_batch", lambda src, pos, dev: moved.append(list(pos)) or src.__getitems__(pos))
    source.samples[1][0].write_bytes(b"not a jpeg")
    gpu = decode.batch_decoder(source, "cuda")
    with pytest.raises(InputError, match="cannot read image"):  # decode fails: the CPU path names the file
        list(decode.decoded_batches(gpu, len(source), 4))
    assert moved == [[0, 1, 2, 3]]


def test_a_batch_with_other_files_than_jpeg_goes_the_cpu_way(tmp_path, fake_gpu, monkeypatch):
    source = write_tree(tmp_path, n=4)
    Image.new("RGB", (10, 12)).save(tmp_path / "c0" / "zz.png")
    source = FolderSource(*scan_folder(tmp_path), "tree", tmp_path)
    moved = []
    monkeypatch.setattr(decode, "_cpu_batch", lambda src, pos, dev: moved.append(list(pos)) or src.__getitems__(pos))
    batches = list(decode.decoded_batches(decode.batch_decoder(source, "cuda"), len(source), 3))
    assert [len(y) for _, y in batches] == [3, 2] and moved == [[0, 1, 2]] and fake_gpu == [(2, "cuda")]
