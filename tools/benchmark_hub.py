"""Train-step and inference time of keras-hub's RetinaNet and DeepLabV3 on each PF
backbone against keras-hub's own ResNet50 backbone, in one process and one run, beside
the backbones' parameters and MACs. Random weights and data (timing does not depend on
them). Writes a markdown table (the README's).

    python tools/benchmark_hub.py [--size 256] [--batch 2] [--runs 5] [-o table.md]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def backbones(size):
    import keras_hub

    from keras_pf.hub import presets

    shape = (size, size, 3)
    yield "ResNet50 (keras-hub)", lambda: keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block", use_pre_activation=False, image_shape=shape)
    for model in ("PFResNet50Hybrid", "PFResNet50Max", "PFViTSmall", "PFPiTSmall"):
        yield model, lambda model=model: presets.build_backbone(model, image_shape=shape)


def retinanet(backbone, size):
    import keras_hub

    return keras_hub.models.RetinaNetObjectDetector(
        backbone=keras_hub.models.RetinaNetBackbone(image_encoder=backbone, min_level=3, max_level=7,
                                                    use_p5=False, image_shape=(size, size, 3)),
        num_classes=20, bounding_box_format="yxyx")


def deeplab(backbone, size):
    import keras_hub

    low = "P2" if "P2" in backbone.pyramid_outputs else "P3"
    return keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=keras_hub.models.DeepLabV3Backbone(
            image_encoder=backbone, spatial_pyramid_pooling_key="P5", dilation_rates=[6, 12, 18],
            upsampling_size=2 ** (5 - int(low[1])), low_level_feature_key=low, image_shape=(size, size, 3)),
        num_classes=21)


def measure(task_name, task, size, batch, runs):
    import keras
    import numpy as np

    from keras_pf.benchmark.profile import median_seconds

    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (batch, size, size, 3)).astype("float32")
    if task_name == "RetinaNet":
        boxes = np.tile(np.array([[[20, 30, 120, 150], [100, 100, 200, 220]]], np.float32) * size / 256, (batch, 1, 1))
        y = {"boxes": boxes, "labels": np.tile(np.array([[1, 5]], np.int32), (batch, 1))}
        task.compile(optimizer=keras.optimizers.SGD(1e-3))
    else:
        y = rng.integers(0, 21, (batch, size, size, 1)).astype("int32")
        task.compile(optimizer=keras.optimizers.SGD(1e-3),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []  # one fit over runs + 2 steps; the first two (tracing, warm-up) dropped
    steps = runs + 2
    xs = np.concatenate([x] * steps)
    ys = ({k: np.concatenate([v] * steps) for k, v in y.items()} if isinstance(y, dict)
          else np.concatenate([y] * steps))
    task.fit(xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[Timer()])
    train = float(np.median(times[2:]))
    one = x[:1]
    infer = median_seconds(lambda: task.predict(one, verbose=0), runs, warmup=2)  # decoding (NMS) included
    return train, infer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args(argv)
    import keras

    import keras_pf.hub  # noqa: F401
    from keras_pf.benchmark.profile import count_flops, count_params

    rows = []
    for name, build in backbones(args.size):
        backbone = build()
        macs, params = count_flops(backbone), count_params(backbone)
        times = {}
        for task_name, make in (("RetinaNet", retinanet), ("DeepLabV3", deeplab)):
            task = make(build(), args.size)
            times[task_name] = measure(task_name, task, args.size, args.batch, args.runs)
            del task
            keras.backend.clear_session()
        rows.append((name, params, macs, times))
        print(name, params, macs, times, flush=True)
    ref = rows[0][3]
    lines = [f"| backbone ({args.size}x{args.size}) | params | backbone MACs | RetinaNet train step (batch {args.batch}) | "
             "RetinaNet inference (1 image, `predict`, with NMS) | DeepLabV3 train step | DeepLabV3 inference |",
             "|---|---|---|---|---|---|---|"]
    for name, params, macs, times in rows:
        cells = []
        for task_name in ("RetinaNet", "DeepLabV3"):
            for k in (0, 1):
                value = times[task_name][k]
                cells.append(f"{value * 1000:.0f} ms ({value / ref[task_name][k]:.2f}x)")
        lines.append(f"| {name} | {params / 1e6:.2f} M | {macs / 1e9:.2f} G | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
