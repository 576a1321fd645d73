"""Tracking metrics on hand-made tracks whose HOTA, MOTA, IDF1 and error counts are known."""

import numpy as np
import pytest

from sqair_pyro.tracking import box_iou, clip_boxes, tracking_metrics

SIZE = (50, 50)
T = 5


def two_objects():
    """One sequence, two digits moving apart; predictions equal the truth, ids 7 and 42."""
    gt = np.zeros((1, T, 2, 4), np.float32)
    for t in range(T):
        gt[0, t, 0] = [2 + t, 3, 10, 12]
        gt[0, t, 1] = [30, 20 + t, 8, 9]
    visible = np.ones((1, T, 2), bool)
    ids = np.tile(np.array([7, 42]), (1, T, 1))
    return gt.copy(), ids, gt, visible


def metrics(pred, ids, gt, visible, **kw):
    return tracking_metrics(pred, ids, gt, visible, SIZE, **kw)


def test_perfect_tracker_scores_one():
    result = metrics(*two_objects())
    assert result["mota"] == 1.0 and result["hota"] == pytest.approx(1.0)
    assert result["idf1"] == 1.0 and result["motp"] == pytest.approx(1.0)
    assert result["id_switches"] == 0
    assert result["false_positives"] == result["misses"] == 0
    assert result["num_gt_dets"] == result["num_pred_dets"] == result["matches"] == 2 * T


def test_identity_swap_counts_one_switch_per_object():
    pred, ids, gt, visible = two_objects()
    ids[0, 3:] = ids[0, 3:, ::-1]  # the tracker swaps its two identities from frame 3 on
    result = metrics(pred, ids, gt, visible)
    assert result["id_switches"] == 2
    # Detection is still perfect; each predicted track is right 3 frames out of 5.
    assert result["false_positives"] == result["misses"] == 0
    assert result["mota"] == pytest.approx((10 - 2) / 10)
    assert result["idf1"] == pytest.approx(6 / 10)
    assert result["deta"] == pytest.approx(1.0) and result["hota"] < 0.9


def test_missing_detection_is_one_miss():
    pred, ids, gt, visible = two_objects()
    ids[0, 2, 1] = -1
    result = metrics(pred, ids, gt, visible)
    assert result["misses"] == 1 and result["false_positives"] == 0
    assert result["id_switches"] == 0
    assert result["mota"] == pytest.approx(9 / 10)
    assert result["num_pred_dets"] == 2 * T - 1


def test_extra_box_is_one_false_positive():
    pred, ids, gt, visible = two_objects()
    pred = np.concatenate([pred, np.zeros((1, T, 1, 4), np.float32)], axis=2)
    ids = np.concatenate([ids, np.full((1, T, 1), -1)], axis=2)
    pred[0, 4, 2] = [10, 35, 8, 8]  # far from both digits
    ids[0, 4, 2] = 99
    result = metrics(pred, ids, gt, visible)
    assert result["false_positives"] == 1 and result["misses"] == 0
    assert result["mota"] == pytest.approx(9 / 10)


@pytest.mark.parametrize("box", [[60, 10, 8, 8], [-20, 10, 10, 10], [10, 50, 5, 5]])
def test_box_wholly_outside_the_canvas_is_ignored(box):
    pred, ids, gt, visible = two_objects()
    pred = np.concatenate([pred, np.zeros((1, T, 1, 4), np.float32)], axis=2)
    ids = np.concatenate([ids, np.full((1, T, 1), -1)], axis=2)
    pred[0, 1, 2] = box
    ids[0, 1, 2] = 5
    result = metrics(pred, ids, gt, visible)
    assert result["false_positives"] == 0 and result["num_pred_dets"] == 2 * T
    assert result["mota"] == 1.0


def test_box_partly_outside_is_clipped_before_iou():
    # The digit's visible part is the last 10 columns; the model's box runs 20 px past the edge.
    gt = np.array([[[[40, 10, 10, 10]]]], np.float32)
    pred = np.array([[[[40, 10, 30, 10]]]], np.float32)  # unclipped IoU 1/3, clipped IoU 1
    result = metrics(pred, np.array([[[0]]]), gt, np.ones((1, 1, 1), bool))
    assert result["matches"] == 1 and result["misses"] == 0 and result["false_positives"] == 0
    assert result["motp"] == pytest.approx(1.0)
    assert box_iou(gt[0, 0], pred[0, 0])[0, 0] == pytest.approx(1 / 3)  # what no clipping gives


def test_iou_threshold_is_respected():
    gt = np.array([[[[10, 10, 10, 10]]]], np.float32)
    pred = np.array([[[[12, 10, 10, 10]]]], np.float32)  # IoU 80 / 120 = 2/3
    args = (pred, np.array([[[3]]]), gt, np.ones((1, 1, 1), bool))
    loose = metrics(*args, iou_threshold=0.6)
    assert loose["matches"] == 1 and loose["motp"] == pytest.approx(2 / 3)
    assert loose["idf1"] == 1.0
    strict = metrics(*args, iou_threshold=0.7)
    assert strict["matches"] == 0 and strict["misses"] == 1 and strict["false_positives"] == 1
    assert strict["idf1"] == 0.0
    with pytest.raises(ValueError, match="iou_threshold"):
        metrics(*args, iou_threshold=0.0)


def test_sequences_are_independent_and_combined_by_sums():
    pred, ids, gt, visible = two_objects()
    # Sequence 2 reuses tracker ids 7 and 42 for other objects (no switch across sequences)
    # and loses one detection; invisible digits are not objects.
    pred2, ids2, gt2, visible2 = (a.copy() for a in (pred, ids[:, :, ::-1], gt, visible))
    ids2[0, 0, 0] = -1
    visible2[0, 4, 1] = False
    gt2[0, 4, 1] = 0
    ids2[0, 4, 1] = -1
    both = [
        np.concatenate(p)
        for p in zip((pred, ids, gt, visible), (pred2, ids2, gt2, visible2), strict=True)
    ]
    result = metrics(*both)
    assert result["num_sequences"] == 2 and result["num_gt_dets"] == 2 * T + 2 * T - 1
    assert result["id_switches"] == 0 and result["misses"] == 1
    assert result["mota"] == pytest.approx(1 - 1 / 19)


def test_bad_input():
    pred, ids, gt, visible = two_objects()
    ids[0, 1] = [4, 4]
    with pytest.raises(ValueError, match="twice"):
        metrics(pred, ids, gt, visible)
    with pytest.raises(ValueError, match="sequences"):
        metrics(pred[:, :3], ids[:, :3], gt[:, :2], visible[:, :2])


def test_clip_boxes_and_iou():
    clipped, inside = clip_boxes(np.array([[-5, 45, 10, 10], [50, 0, 3, 3]]), SIZE)
    np.testing.assert_array_equal(clipped[0], [0, 45, 5, 5])
    assert inside.tolist() == [True, False]
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 10, 10], [20, 20, 1, 1]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])


def test_box_iou_broadcasts_leading_dims_as_frame_by_frame_calls():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 20, (3, 4, 2, 4))  # 3 sequences, 4 frames, 2 boxes
    b = rng.uniform(0, 20, (3, 4, 5, 4))
    batched = box_iou(a, b)
    assert batched.shape == (3, 4, 2, 5) and batched.max() > 0
    for s in range(3):
        for t in range(4):
            np.testing.assert_array_equal(batched[s, t], box_iou(a[s, t], b[s, t]))
    assert box_iou(np.zeros(0), np.zeros((2, 4))).shape == (0, 2)  # empty, as before
