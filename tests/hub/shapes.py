"""A generated detection and segmentation dataset: coloured shapes on textured
backgrounds, with their boxes and masks, made by the tests (no download).

Classes: 0 square, 1 disc, 2 triangle; each image holds 1-3 shapes of 14-28 pixels,
in a random colour far enough from the background's, which is a random colour with
stripes and noise. The segmentation mask has 0 for the background and 1 + class for a
shape's pixels."""

import numpy as np

CLASSES = ("square", "disc", "triangle")


def _shape_mask(kind, size, rng):
    yy, xx = np.mgrid[:size, :size] + 0.5
    if kind == 0:
        return np.ones((size, size), bool)
    if kind == 1:
        return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 2) ** 2
    # an upright isosceles triangle filling the box
    return np.abs(xx - size / 2) <= yy / 2


def make_dataset(n, size=64, seed=0, max_shapes=3):
    """`(images uint8 (n, size, size, 3), boxes list of (k, 4) yxyx float32 pixels,
    labels list of (k,) int32, masks uint8 (n, size, size))`."""
    rng = np.random.RandomState(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    all_boxes, all_labels = [], []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        background = rng.uniform(40, 215, 3)
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
        stripes = 25 * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period)
        image = background + stripes[..., None] + rng.normal(0, 8, (size, size, 3))
        boxes, labels = [], []
        for _ in range(rng.randint(1, max_shapes + 1)):
            for _attempt in range(20):
                side = rng.randint(14, 29)
                top, left = rng.randint(0, size - side + 1, 2)
                box = (top, left, top + side, left + side)
                overlap = any(not (box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1])
                              for b in boxes)
                if not overlap:
                    break
            else:
                continue
            kind = rng.randint(len(CLASSES))
            colour = rng.uniform(0, 255, 3)
            while np.abs(colour - background).sum() < 200:
                colour = rng.uniform(0, 255, 3)
            shape = _shape_mask(kind, side, rng)
            region = image[top:top + side, left:left + side]
            region[shape] = colour + rng.normal(0, 6, (shape.sum(), 3))
            masks[i, top:top + side, left:left + side][shape] = 1 + kind
            boxes.append(box)
            labels.append(kind)
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
        all_boxes.append(np.array(boxes, np.float32).reshape(-1, 4))
        all_labels.append(np.array(labels, np.int32))
    return images, all_boxes, all_labels, masks


def padded(boxes, labels, max_boxes=None):
    """keras-hub's detection targets: `{"boxes": (n, m, 4), "labels": (n, m)}`, padded
    with boxes of -1 and labels -1."""
    m = max_boxes or max(len(b) for b in boxes)
    out_boxes = -np.ones((len(boxes), m, 4), np.float32)
    out_labels = -np.ones((len(boxes), m), np.int32)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        out_boxes[i, :len(b)], out_labels[i, :len(l)] = b, l
    return {"boxes": out_boxes, "labels": out_labels}


def iou(a, b):
    """IoU of yxyx boxes `a` (k, 4) and `b` (m, 4): (k, m)."""
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def mean_average_precision(detections, boxes, labels, num_classes, threshold=0.5):
    """PASCAL VOC mAP at IoU `threshold` (all-point interpolated AP, averaged over
    classes). `detections`: per image `(boxes (k, 4), scores (k,), labels (k,))`."""
    aps = []
    for c in range(num_classes):
        records, positives = [], 0
        for (det_boxes, det_scores, det_labels), gt_boxes, gt_labels in zip(detections, boxes, labels):
            gt = gt_boxes[gt_labels == c]
            positives += len(gt)
            mine = det_labels == c
            order = np.argsort(-det_scores[mine])
            found = det_boxes[mine][order]
            used = np.zeros(len(gt), bool)
            overlaps = iou(found, gt) if len(gt) and len(found) else np.zeros((len(found), len(gt)))
            for k, score in enumerate(det_scores[mine][order]):
                j = int(np.argmax(overlaps[k])) if len(gt) else -1
                hit = j >= 0 and overlaps[k, j] >= threshold and not used[j]
                if hit:
                    used[j] = True
                records.append((score, hit))
        if positives == 0:
            continue
        records.sort(key=lambda r: -r[0])
        hits = np.array([r[1] for r in records], float)
        tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
        recall = tp / positives
        precision = tp / np.maximum(tp + fp, 1e-9)
        recall = np.concatenate([[0], recall, [1]])
        precision = np.concatenate([[0], precision, [0]])
        for k in range(len(precision) - 2, -1, -1):
            precision[k] = max(precision[k], precision[k + 1])
        steps = np.where(recall[1:] != recall[:-1])[0]
        aps.append(float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1])))
    return float(np.mean(aps)) if aps else 0.0


def mean_iou(predicted, masks, num_classes):
    """Mean over classes (background included) of the intersection over union."""
    values = []
    for c in range(num_classes):
        p, t = predicted == c, masks == c
        union = np.logical_or(p, t).sum()
        if union:
            values.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(values))
