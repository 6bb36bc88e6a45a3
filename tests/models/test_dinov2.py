"""DINOv2 ViT-S/14: official key layout, loading from the hub cache, and agreement with an
independent forward written here from the published formulas (plain tensor ops, float64)."""

import hashlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

from qact_cli.errors import InputError
from qact_cli.models import dinov2
from qact_cli.models.dinov2 import FeatureSpec, extract_features, load_backbone, preprocess

DIM, DEPTH, HEADS, PATCH, GRID = 384, 12, 6, 14, 37  # ViT-S/14 built for 518 px
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def official_shapes(dim=DIM, depth=DEPTH, grid=GRID, patch=PATCH, mlp_ratio=4):
    """Key -> shape of the official `dinov2_vit*14_pretrain.pth`, from the architecture facts."""
    hidden = mlp_ratio * dim
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid * grid, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "ls1.gamma": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (hidden, dim), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,),
            b + "ls2.gamma": (dim,),
        })  # fmt: skip
    return shapes


def random_official_state_dict(seed=0):
    """Random values at realistic scales (unit-variance activations, non-trivial attention and
    position embeddings), so that a wrong formula anywhere shows in the output."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in official_shapes().items():
        if k.endswith("gamma"):
            sd[k] = torch.empty(shape).uniform_(0.05, 0.5, generator=g)
        elif "norm" in k and k.endswith("weight"):
            sd[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("weight"):
            fan_in = math.prod(shape[1:])
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif k in ("cls_token", "pos_embed", "mask_token"):
            sd[k] = torch.randn(shape, generator=g)
        else:  # biases
            sd[k] = 0.1 * torch.randn(shape, generator=g)
    return sd


# --- independent reference forward (float64) --------------------------------------------------


def cubic(t, a):
    """Keys' cubic convolution kernel."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def torch_bicubic_matrix(n_in, n_out, scale):
    """(n_out, n_in) matrix of PyTorch's bicubic (a = -0.75, align_corners=False, border taps
    clamped) when called with scale_factor=`scale`: source x = (i + 0.5) / scale - 0.5."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        x = (i + 0.5) / scale - 0.5
        x0 = math.floor(x)
        for j in range(x0 - 1, x0 + 3):
            m[i, min(max(j, 0), n_in - 1)] += cubic(torch.tensor(x - j, dtype=torch.float64), -0.75)
    return m


def pil_bicubic_matrix(n_in, n_out):
    """(n_out, n_in) matrix of PIL's bicubic upsampling (a = -0.5, taps inside the image,
    weights renormalised): centre = (i + 0.5) · n_in / n_out."""
    scale = n_in / n_out
    assert scale <= 1
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - 2 + 0.5), 0), min(int(centre + 2 + 0.5), n_in)
        js = torch.arange(lo, hi, dtype=torch.float64)
        w = cubic(js - centre + 0.5, -0.5)
        m[i, lo:hi] = w / w.sum()
    return m


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6) * w + b


def reference_pos_embed(pos, h0, w0, offset=0.1):
    grid = pos[0, 1:].reshape(GRID, GRID, -1).double()
    mh = torch_bicubic_matrix(GRID, h0, (h0 + offset) / GRID)
    mw = torch_bicubic_matrix(GRID, w0, (w0 + offset) / GRID)
    patches = torch.einsum("ia,jb,abd->ijd", mh, mw, grid).reshape(h0 * w0, -1)
    return torch.cat([pos[0, :1].double(), patches])


def reference_features(sd, images_uint8, res=224):
    sd = {k: v.double() for k, v in sd.items()}
    x = images_uint8.double() / 255
    r = pil_bicubic_matrix(x.shape[-1], res)
    x = torch.einsum("ia,ncab,jb->ncij", r, x, r).clamp(0, 1)
    x = (x - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    n, g = x.shape[0], res // PATCH
    patches = x.reshape(n, 3, g, PATCH, g, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3 * PATCH * PATCH)
    tok = patches @ sd["patch_embed.proj.weight"].reshape(DIM, -1).T + sd["patch_embed.proj.bias"]
    tok = torch.cat([sd["cls_token"].expand(n, 1, DIM), tok], 1) + reference_pos_embed(sd["pos_embed"], g, g)
    dh = DIM // HEADS
    for i in range(DEPTH):
        p = lambda k: sd[f"blocks.{i}.{k}"]  # noqa: E731
        h = layer_norm(tok, p("norm1.weight"), p("norm1.bias"))
        qkv = (h @ p("attn.qkv.weight").T + p("attn.qkv.bias")).reshape(n, -1, 3, HEADS, dh)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # (n, heads, tokens, dh)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), -1)
        h = (att @ v).transpose(1, 2).reshape(n, -1, DIM) @ p("attn.proj.weight").T + p("attn.proj.bias")
        tok = tok + p("ls1.gamma") * h
        h = layer_norm(tok, p("norm2.weight"), p("norm2.bias")) @ p("mlp.fc1.weight").T + p("mlp.fc1.bias")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        tok = tok + p("ls2.gamma") * (h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias"))
    return layer_norm(tok, sd["norm.weight"], sd["norm.bias"])[:, 0]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(TORCH_HOME holding the random official-layout file in its hub cache, the state dict)."""
    home = tmp_path_factory.mktemp("torch_home")
    sd = random_official_state_dict()
    path = home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    return home, sd


@pytest.fixture
def backbone(official, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(official[0]))
    return load_backbone("dinov2_vits14")


def images(n, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --- tests ----------------------------------------------------------------------------------------


def test_random_backbone_has_official_layout():
    sd = load_backbone("dinov2_vits14", weights="random").state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_shapes()
    assert len(sd) == 175 and sum(v.numel() for v in sd.values()) == 22_056_576
    for name, (dim, depth) in {"dinov2_vitb14": (768, 12), "dinov2_vitl14": (1024, 24)}.items():
        meta = dinov2._build(name).state_dict()  # shapes only, no memory
        assert {k: tuple(v.shape) for k, v in meta.items()} == official_shapes(dim=dim, depth=depth)


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = load_backbone(weights="random", seed=1).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = load_backbone(weights="random", seed=1).state_dict()
    c = load_backbone(weights="random", seed=2).state_dict()
    assert torch.equal(a["blocks.3.attn.qkv.weight"], b["blocks.3.attn.qkv.weight"])
    assert not torch.equal(a["blocks.3.attn.qkv.weight"], c["blocks.3.attn.qkv.weight"])


def test_loads_from_hub_cache_strictly(official, backbone):
    home, sd = official
    path = home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    got = backbone.state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    assert backbone.name == "dinov2_vits14" and backbone.embed_dim == 384
    assert backbone.weights_path == str(path)
    assert backbone.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training
    with pytest.raises(InputError, match="sha256"):
        load_backbone("dinov2_vits14", expected_sha256="0" * 64)


def test_hub_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    assert dinov2.default_weights_path("dinov2_vits14") == expected


def test_features_agree_with_reference_forward(official, backbone):
    x = images(2)
    feats = extract_features(backbone, x, batch_size=2, device="cpu")
    assert feats.shape == (2, 384) and feats.dtype == torch.float32
    ref = reference_features(official[1], x[:1])[0]  # one image: the float64 reference is slow
    rel = (torch.linalg.norm(feats[0].double() - ref) / torch.linalg.norm(ref)).item()
    assert rel < 1e-4, rel  # float32 vs float64; 1e-2 would already flag an interpolation change
    alone = extract_features(backbone, x[1:], batch_size=1, device="cpu")
    torch.testing.assert_close(alone[0], feats[1], rtol=1e-4, atol=1e-5)  # batch-independent
    assert torch.equal(extract_features(backbone, x[1:], device="cpu"), alone)  # deterministic


def test_pos_embed_interpolation_is_official(official, backbone):
    pos = official[1]["pos_embed"]
    assert backbone.interpolate_pos_embed(37, 37) is backbone.pos_embed  # build size: used as is
    for h0, w0 in [(16, 16), (8, 20)]:
        got = backbone.interpolate_pos_embed(h0, w0)[0].double()
        ref = reference_pos_embed(pos, h0, w0)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # The 0.1 offset matters: resizing to a size (timm-style sampling) gives another embedding.
    plain = reference_pos_embed(pos, 16, 16, offset=0.0)
    assert (plain - reference_pos_embed(pos, 16, 16)).abs().max() > 1e-2


def test_preprocess_matches_pil_bicubic():
    # Smooth image (as natural images are); PIL rounds to uint8 between its two passes, we don't.
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    img = np.stack([np.sin(3 * xx + yy), np.cos(4 * yy - 2 * xx), xx * yy], -1)
    img = ((img - img.min()) / np.ptp(img) * 255).round().astype(np.uint8)
    pil = np.asarray(Image.fromarray(img).resize((224, 224), Image.BICUBIC), dtype=np.float64) / 255
    spec = FeatureSpec()
    ours = preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], spec)[0].permute(1, 2, 0).double()
    ours = ours * torch.tensor(STD, dtype=torch.float64) + torch.tensor(MEAN, dtype=torch.float64)
    diff = (ours.numpy() - pil) * 255
    assert np.abs(diff).mean() < 0.4 and np.abs(diff).max() < 2.5
    no_aa = preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], FeatureSpec(antialias=False))
    assert not torch.allclose(no_aa, preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], spec), atol=1e-3)


def test_non_square_input_is_resized_on_short_side_and_centre_cropped():
    x = torch.zeros(1, 3, 40, 60, dtype=torch.uint8)
    x[..., :, 25:35] = 255  # a bright vertical stripe in the middle
    out = preprocess(x, FeatureSpec(res=28))
    assert out.shape == (1, 3, 28, 28)
    col = out[0, 0, 14]
    assert col[14] > col[0] and torch.allclose(col, col.flip(0), atol=0.05)  # stripe centred


def test_feature_spec_validates_and_round_trips():
    spec = FeatureSpec(res=112, feature="cls+avgpool")
    assert FeatureSpec(**spec.to_dict()) == spec and spec.dim(384) == 768
    with pytest.raises(Exception, match="multiple of 14"):
        FeatureSpec(res=32)
    with pytest.raises(Exception, match="feature"):
        FeatureSpec(feature="mean")
