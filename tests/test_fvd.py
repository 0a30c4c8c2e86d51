"""Fréchet distance against closed forms, and the I3D wrapper against a TorchScript stand-in
with the StyleGAN-V forward signature (no real I3D weights exist here)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vans.errors import VansError
from vans.evaluation.fvd import (
    I3D,
    I3D_MIN_FRAMES,
    FVDError,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    i3d_input,
)

# torch.jit.script is deprecated in torch 2.13 but is how the stand-in I3D is built.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

# --------------------------------------------------------------------------- Fréchet distance


def test_diagonal_covariances_match_the_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 3.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 2.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, abs=1e-10)


def test_scalar_times_identity_against_a_full_covariance() -> None:
    # sqrtm(4I @ S) = 2 sqrtm(S); S = [[2, 1], [1, 2]] has eigenvalues 3 and 1, so
    # Tr = 2 (sqrt(3) + 1) and FD = |dmu|^2 + 8 + 4 - 4 (sqrt(3) + 1) = |dmu|^2 + 8 - 4 sqrt(3).
    s = np.array([[2.0, 1.0], [1.0, 2.0]])
    got = frechet_distance(np.zeros(2), 4 * np.eye(2), np.array([1.0, 2.0]), s)
    assert got == pytest.approx(5 + 8 - 4 * math.sqrt(3), abs=1e-10)


def test_non_commuting_2x2_covariances_match_the_trace_identity() -> None:
    # For 2x2 M with positive eigenvalues, Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    product = s1 @ s2
    assert not np.allclose(product, product.T)  # s1 and s2 do not commute
    tr_sqrt = math.sqrt(np.trace(product) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 1.0])
    expected = 0.25 + 4.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-10)


def test_identical_sets_give_zero_and_the_distance_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16))
    b = rng.normal(loc=0.3, scale=1.5, size=(250, 16)) @ rng.normal(size=(16, 16))
    assert abs(frechet_distance_from_features(a, a.copy())) < 1e-6
    ab, ba = frechet_distance_from_features(a, b), frechet_distance_from_features(b, a)
    assert ab > 1
    assert ab == pytest.approx(ba, rel=1e-8)
    # Torch input gives the same float64 statistics as numpy.
    assert frechet_distance_from_features(torch.from_numpy(a).float(), b) == pytest.approx(
        frechet_distance_from_features(a.astype(np.float32), b), rel=1e-12
    )


def test_feature_statistics_are_mean_and_unbiased_covariance() -> None:
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    mu, sigma = feature_statistics(x)
    assert mu == pytest.approx([3.0, 3.0])
    # Hand: deviations (-2, -1), (0, 3), (2, -2); sums of products / (3 - 1).
    assert sigma == pytest.approx(np.array([[4.0, -1.0], [-1.0, 7.0]]))
    assert mu.dtype == sigma.dtype == np.float64


def test_singular_covariance_product_is_regularised() -> None:
    # Zero covariance: the product is exactly singular; adding 1e-6 I to both gives
    # sqrtm = 1e-6 I, so FD = |dmu|^2 - 2 * D * 1e-6 (pytorch-fid's behaviour).
    zero = np.zeros((3, 3))
    got = frechet_distance(np.zeros(3), zero, np.ones(3), zero)
    assert got == pytest.approx(3 - 6e-6, abs=1e-12)
    # Fewer videos than feature dimensions: rank-deficient covariances, still finite.
    rng = np.random.default_rng(1)
    few = frechet_distance_from_features(rng.normal(size=(6, 40)), rng.normal(size=(6, 40)))
    assert math.isfinite(few) and few > 0


def test_bad_statistics_raise_clear_errors() -> None:
    not_psd = np.array([[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match=r"imaginary part.*not positive semi-definite"):
        frechet_distance(np.zeros(2), not_psd, np.zeros(2), np.eye(2))
    with pytest.raises(FVDError, match="shapes do not fit"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(FVDError, match="sigma2 contains NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.nan))
    with pytest.raises(FVDError, match="at least 2 feature rows"):
        feature_statistics(np.ones((1, 4)))
    with pytest.raises(FVDError, match="2-D"):
        feature_statistics(np.ones(4))
    with pytest.raises(FVDError, match=r"NaN or infinite values \(rows \[1\]\)"):
        feature_statistics(np.array([[0.0, 1.0], [np.inf, 0.0], [1.0, 1.0]]))
    with pytest.raises(FVDError, match="feature sizes differ: 4 vs 5"):
        frechet_distance_from_features(np.ones((3, 4)), np.ones((3, 5)))
    assert issubclass(FVDError, VansError)


# --------------------------------------------------------------------------- I3D


class FakeI3D(torch.nn.Module):
    """The StyleGAN-V I3D's forward signature; asserts the documented input convention and
    returns content-dependent 400-d features."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3 * 2 * 4 * 4, 400)

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = False,
        resize: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        assert not rescale and not resize and return_features, "wrong keyword arguments"
        assert x.dtype == torch.float32, "input must be float32"
        assert x.dim() == 5 and x.shape[1] == 3, "layout must be (B, 3, T, H, W)"
        assert x.shape[3] == 224 and x.shape[4] == 224, "frames must be 224x224"
        assert x.shape[2] >= 10, "too few frames"
        assert bool(x.min() >= -1.0) and bool(x.max() <= 1.0), "values must be in [-1, 1]"
        return self.head(F.adaptive_avg_pool3d(x, [2, 4, 4]).flatten(1))


class NoKwargs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@pytest.fixture(scope="module")
def fake_i3d_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(FakeI3D()).save(str(path))
    return path


def _video(seed: int, frames: int = 12, size: tuple[int, int] = (90, 160)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, *size, 3), generator=g, dtype=torch.uint8)


def test_i3d_input_resizes_the_short_side_center_crops_and_scales() -> None:
    # A VANS-sized clip: 352x640 -> 224x408, crop columns 92..315 (source ~144..494).
    video = torch.full((I3D_MIN_FRAMES, 352, 640, 3), 255, dtype=torch.uint8)
    video[:, :, 140:500] = 0  # black wherever the crop reads from
    video[:, :, :, 0] = 255  # red channel saturated everywhere
    video[3, :, 140:500, 1] = 255  # green only in frame 3
    x = i3d_input(video)
    assert x.shape == (3, I3D_MIN_FRAMES, 224, 224) and x.dtype == torch.float32
    assert torch.all(x[0] == 1.0)  # channel 0 is red
    assert torch.all(x[2] == -1.0)  # blue is black inside the crop
    assert torch.all(x[1, 3] == 1.0) and torch.all(x[1, 4] == -1.0)  # time stays on dim 1
    # Portrait frames crop rows instead: 320x224 -> rows 48..271.
    tall = torch.zeros((I3D_MIN_FRAMES, 320, 224, 3), dtype=torch.uint8)
    tall[:, 48:272] = 255
    assert torch.all(i3d_input(tall) == 1.0)


def test_i3d_features_feed_the_documented_input_and_batch_consistently(
    fake_i3d_path: Path,
) -> None:
    i3d = I3D.from_file(fake_i3d_path)
    videos = [_video(s) for s in range(5)]
    batched = i3d.features(videos, batch_size=2)
    assert batched.shape == (5, 400) and batched.dtype == torch.float32
    one_by_one = torch.cat([i3d.features([v]) for v in videos])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-5)
    direct = i3d.module(
        torch.stack([i3d_input(v) for v in videos]),
        rescale=False,
        resize=False,
        return_features=True,
    )
    torch.testing.assert_close(batched, direct, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # features depend on the content


def test_i3d_rejects_videos_it_cannot_take(fake_i3d_path: Path) -> None:
    i3d = I3D.from_file(fake_i3d_path)
    with pytest.raises(
        FVDError, match=f"video 0 has 4 frames; the I3D needs at least {I3D_MIN_FRAMES}"
    ):
        i3d.features([_video(0, frames=4)])
    with pytest.raises(FVDError, match="video 1 has 11 frames but video 0 has 12"):
        i3d.features([_video(0), _video(1, frames=11)])
    with pytest.raises(FVDError, match=r"video 0 must be a uint8 tensor, got torch\.float32"):
        i3d.features([_video(0).float()])
    with pytest.raises(FVDError, match=r"shape \(T, H, W, 3\)"):
        i3d.features([_video(0)[..., :1]])
    with pytest.raises(FVDError, match="no videos"):
        i3d.features([])


def test_i3d_loading_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "i3d_torchscript.pt"
    with pytest.raises(FVDError, match=f"{missing}: I3D TorchScript file not found"):
        I3D.from_file(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(FVDError, match=f"{garbage}: not a TorchScript model"):
        I3D.from_file(garbage)
    state_dict = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, state_dict)
    with pytest.raises(FVDError, match=f"{state_dict}: not a TorchScript model"):
        I3D.from_file(state_dict)
    plain = tmp_path / "plain.pt"
    torch.jit.script(NoKwargs()).save(str(plain))
    with pytest.raises(FVDError, match=f"{plain}: forward\\(\\) takes no rescale, resize"):
        I3D.from_file(plain)
