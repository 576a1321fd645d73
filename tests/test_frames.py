"""Any video as data: `import-frames` from image folders and video files, and the commands on
files with only some ground truth (only images; boxes without labels or metadata)."""

import json
import re

import cv2
import numpy as np
import pytest

from sqair_pyro.cli import main
from sqair_pyro.data import load_npz, read_metadata, save_npz
from sqair_pyro.data.frames import import_frames, to_sequences


def _frames(count: int, height: int = 60, width: int = 80) -> list[np.ndarray]:
    """BGR frames with a bright square moving right, and a known colour per channel."""
    frames = []
    for i in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[20:40, 2 * i : 2 * i + 20] = (30, 120, 250)  # B, G, R
        frames.append(frame)
    return frames


@pytest.fixture
def png_folder(tmp_path):
    folder = tmp_path / "png"
    folder.mkdir()
    for i, frame in enumerate(_frames(12)):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), frame)
    (folder / "notes.txt").write_text("not a frame")  # other files are ignored
    return folder


def test_folder_of_png_frames_imports(png_folder, tmp_path):
    path = import_frames(png_folder, tmp_path / "f.npz", size=(30, 40), length=5, stride=3)
    arrays = load_npz(path)
    assert set(arrays) == {"images", "metadata"}
    # 12 frames, sequences of 5 starting every 3 frames: starts 0, 3, 6.
    assert arrays["images"].shape == (3, 5, 30, 40) and arrays["images"].dtype == np.uint8
    expected = cv2.cvtColor(
        cv2.resize(_frames(12)[4], (40, 30), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY
    )
    np.testing.assert_array_equal(arrays["images"][0, 4], expected)
    np.testing.assert_array_equal(arrays["images"][1, 1], arrays["images"][0, 4])  # overlap
    meta = read_metadata(arrays)
    assert meta["frames_kept"] == 12 and meta["stride"] == 3 and meta["grey"] is True
    colour = load_npz(import_frames(png_folder, tmp_path / "c.npz", (30, 40), grey=False, length=4))
    assert colour["images"].shape == (3, 4, 30, 40, 3)
    square = colour["images"][0, 0, 15, 5]  # inside the square: RGB order
    assert abs(int(square[0]) - 250) <= 2 and abs(int(square[2]) - 30) <= 2


def test_video_file_imports_every_nth_frame(tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    assert writer.isOpened()
    for frame in _frames(25):
        writer.write(frame)
    writer.release()
    assert main(["import-frames", str(video), "--out", str(tmp_path / "v.npz"), "--every", "2",
                 "--length", "4", "--stride", "2"]) == 0  # fmt: skip
    arrays = load_npz(tmp_path / "v.npz")
    # 13 frames kept (0, 2, .., 24); sequences of 4 every 2 frames: (13 - 4) // 2 + 1 = 5.
    assert arrays["images"].shape == (5, 4, 50, 50)
    # The square moves 4 pixels (80 -> 50: 2.5) between kept frames: its mass moves right.
    cols = arrays["images"][0].astype(float).sum(1)  # (T, W)
    centre = (cols * np.arange(50)).sum(1) / cols.sum(1)
    assert np.all(np.diff(centre) > 1.5)
    assert main(["import-frames", str(video), "--out", str(tmp_path / "w.npz"),
                 "--max-sequences", "1"]) == 0  # fmt: skip
    assert load_npz(tmp_path / "w.npz")["images"].shape == (1, 10, 50, 50)


def test_to_sequences():
    frames = np.arange(7)[:, None]
    np.testing.assert_array_equal(
        to_sequences(frames, 3, 2)[:, :, 0], [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    )
    with pytest.raises(ValueError, match="7 frames are too few for one sequence of 8"):
        to_sequences(frames, 8, 1)


def _bad_sources(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"\x89PNG but not really")
    text = tmp_path / "notes.avi"
    text.write_text("hello")
    few = tmp_path / "few"
    few.mkdir()
    for i, frame in enumerate(_frames(3)):
        cv2.imwrite(str(few / f"{i}.png"), frame)
    return [
        ([str(tmp_path / "nothing")], "no video file or folder of images"),
        ([str(empty)], "holds no image files"),
        ([str(corrupt)], "cannot read it as an image"),
        ([str(text)], "cannot open it as a video"),
        ([str(few)], "3 frames are too few for one sequence of 10"),
    ]


def test_bad_import_input_is_one_clear_line(tmp_path, capsys):
    """The table of bad ``import-frames`` input: exit status 1, one line, no traceback."""
    for args, message in _bad_sources(tmp_path):
        assert main(["import-frames", *args, "--out", str(tmp_path / "o.npz")]) == 1
        err = capsys.readouterr().err
        lines = err.strip().split("\n")  # a progress bar redraws its one line with \r
        assert message in lines[-1] and "Traceback" not in err and len(lines) == 1
    assert not (tmp_path / "o.npz").exists()
    for flags in (["--size", "0", "5"], ["--length", "0"], ["--every", "-1"]):
        with pytest.raises(SystemExit) as stopped:
            main(["import-frames", str(tmp_path), "--out", str(tmp_path / "o.npz"), *flags])
        assert stopped.value.code == 2
        assert "must be a positive integer" in capsys.readouterr().err


def test_a_file_with_only_images_trains_and_shows(png_folder, tmp_path, capsys):
    data = tmp_path / "frames.npz"
    assert main(["import-frames", str(png_folder), "--out", str(data), "--length", "2",
                 "--stride", "1"]) == 0  # fmt: skip
    run = tmp_path / "run"
    args = ["train", "--preset", "mlp-sqair", "--data", str(data), "--out", str(run)]
    small = ["--set", "hidden=16", "--set", "init_from=None", "--set", "num_frames=2"]
    assert main([*args, "--steps", "2", *small, "--set", "validation_size=2"]) == 0
    err = capsys.readouterr().err
    assert "has no counts: skipping training counting accuracy" in err
    assert (run / "best.pt").exists()
    out = tmp_path / "figures"
    assert main(["show", "--data", str(data), "--out", str(out), "--sequences", "2"]) == 0
    assert (out / "reconstructions.png").exists()
    # Colour frames and a grey model: one clear line.
    colour = tmp_path / "colour.npz"
    assert main(["import-frames", str(png_folder), "--out", str(colour), "--colour"]) == 0
    assert main(["show", "--data", str(colour), "--out", str(out)]) == 1
    assert (
        "reads grey frames (import them with `sqair-pyro import-frames` without `--colour`)"
        in capsys.readouterr().err
    )


def test_boxes_without_labels_or_metadata_evaluate_with_tracking(tiny_data, tmp_path, capsys):
    arrays = load_npz(tiny_data / "test.npz")
    keep = {key: arrays[key][:4] for key in ("images", "boxes", "visible")}
    data = save_npz(tmp_path / "boxes.npz", keep)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(data), "--out", str(out), "--particles", "2"]) == 0
    err = capsys.readouterr().err
    assert "has no labels: skipping counting accuracy (paper's)" in err
    report = json.loads(out.read_text())
    assert report["counting_accuracy"] is None and report["counting_accuracy_visible"] > 0.5
    assert 0 < report["idf1"] <= 1 and report["num_gt_dets"] == int(keep["visible"].sum())
    # Addition needs labels: one line.
    folder = tmp_path / "split"
    folder.mkdir()
    for split in ("train", "test"):
        save_npz(folder / f"{split}.npz", keep)
    assert main(["addition", "--data", str(folder), "--epochs", "1"]) == 1
    assert "the addition probe needs each object's class" in capsys.readouterr().err


def test_a_truncated_video_says_so_in_one_line_and_keeps_what_it_read(tmp_path, capsys):
    """A video cut short on disk: FFmpeg's decoder noise is silenced, one note says how many
    frames of those the file claims could be read, and those are imported."""
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    for frame in _frames(40):
        writer.write(frame)
    writer.release()
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    assert main(["import-frames", str(tmp_path / "cut.avi"), "--out", str(tmp_path / "c.npz"),
                 "--length", "2"]) == 0  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if "frame/s" not in line]
    notes = [line for line in err if "could be read" in line]
    assert len(notes) == 1 and "should hold 40 frames" in notes[0], err
    read = int(re.search(r"only (\d+) could be read", notes[0]).group(1))
    assert 2 <= read < 40
    assert load_npz(tmp_path / "c.npz")["images"].shape[0] == read // 2  # sequences of 2


def test_frames_beyond_the_free_memory_are_refused_before_reading(png_folder, monkeypatch):
    """The frames' bytes are checked against the free memory before any frame is read."""
    from sqair_pyro.data import frames

    monkeypatch.setattr(frames, "free_memory", lambda: 10**6)
    with pytest.raises(ValueError, match=r"need .* GiB, more than the 0\.0 GiB of free memory"):
        frames.read_frames(png_folder, (1000, 1000))
    assert frames.read_frames(png_folder, (10, 10)).shape[1:] == (10, 10)
