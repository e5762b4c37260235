"""From a fine-tuned Keras model to an Android-ready `.tflite`: optional quantization-aware
training, export with metadata and labels, and a short report (float vs exported top-1 on
the validation split, file size, latency). `keras-pf finetune ... --qat-epochs N --export
int8` runs it on the run folder; `export_run` is the Python entry point."""

import json
import os

import numpy as np

from keras_pf.files import write_atomic

REPORT_NAME = "mobile_report.md"


def check_mobile_arguments(args):
    """Before training: the mobile options fit together."""
    if args.qat_epochs and args.export != "int8":
        raise ValueError("--qat-epochs trains for an int8 file: add --export int8")


def compare_on(model, path, keras_dataset, pixel_dataset):
    """Keras `model` vs the `.tflite` file on the same images (`keras_dataset`
    preprocessed for Keras, `pixel_dataset` the same batches as raw pixels for the file):
    each one's top-1, their top-1 agreement, and the mean absolute difference of their
    outputs (probabilities)."""
    from keras_pf.mobile.check import run_tflite

    keras_out, file_out, labels = [], [], []
    for (images, batch_labels), (pixels, _) in zip(keras_dataset, pixel_dataset):
        keras_out.append(np.asarray(model(images, training=False), "float32"))
        file_out.append(run_tflite(path, np.asarray(pixels, dtype="float32")))
        labels.append(np.asarray(batch_labels))
    keras_out, file_out, labels = map(np.concatenate, (keras_out, file_out, labels))
    return {"images": len(labels),
            "keras_float_top1": float(np.mean(keras_out.argmax(-1) == labels)),
            "tflite_top1": float(np.mean(file_out.argmax(-1) == labels)),
            "top1_agreement": float(np.mean(file_out.argmax(-1) == keras_out.argmax(-1))),
            "mean_abs_diff": float(np.mean(np.abs(file_out - keras_out)))}


def latency_ms(path, runs=20):
    """Median single-image latency (ms) of the file in LiteRT with XNNPACK, 1 thread."""
    from keras_pf.mobile.check import interpreter

    from keras_pf.benchmark.profile import median_seconds

    interp = interpreter(path, num_threads=1)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    return 1000 * median_seconds(interp.invoke, runs=runs, warmup=1)


def export_run(model, class_names, train_source, val_source, output_dir, *, image_size,
               precision="int8", qat_epochs=0, batch_size=32, learning_rate=1e-4, seed=None,
               verbose=1):
    """Write `output_dir/model.tflite` (+ `.labels.txt`) and `output_dir/mobile_report.md`
    for the fine-tuned Keras `model`; returns the report as a dict.

    With `qat_epochs`, the model is first trained quantization-aware (on `train_source`)
    and the QAT model exported; otherwise int8 is calibrated on training images. The file
    takes RGB pixels in [0, 255] (ImageNet normalization inside the graph)."""
    from keras_pf.training import data
    from keras_pf.mobile import export
    from keras_pf.mobile.calibration import calibration_images

    path = os.path.join(output_dir, "model.tflite")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    source = model
    if qat_epochs:
        from keras_pf.mobile.qat import quantize_aware

        source = quantize_aware(model)
        train, _ = data.train_dataset(train_source, size, batch_size, seed=seed)
        source.compile(optimizer=_tf_keras_adam(learning_rate),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        source.fit(train, epochs=qat_epochs, verbose=verbose)
    calibration = None
    if precision == "int8":  # after QAT: ranges for the layers tfmot left float
        calibration, _ = calibration_images(train_source, size, raw_pixels=True)
    export.export_tflite(source, path, precision, calibration=calibration,
                         include_preprocessing=True, labels=list(class_names),
                         model_info={"description": f"{model.name} fine-tuned on {len(class_names)} "
                                                    "classes by keras_pf; input RGB pixels in [0, 255]."})
    val_pixels, _ = data.eval_dataset(val_source, size, batch_size=batch_size, preprocessing=None)
    val_keras, _ = data.eval_dataset(val_source, size, batch_size=batch_size)
    report = {
        "file": os.path.basename(path),
        "precision": precision,
        "qat_epochs": qat_epochs,
        "size_bytes": os.path.getsize(path),
        **compare_on(model, path, val_keras, val_pixels),
        "latency_ms": latency_ms(path),
    }
    lines = [
        f"# {report['file']}: {precision} (QAT epochs: {qat_epochs})",
        "",
        "| | top-1 (validation) | size | latency (1 thread, median) |",
        "|---|---|---|---|",
        f"| Keras float32 | {100 * report['keras_float_top1']:.1f}% | | |",
        f"| {report['file']} | {100 * report['tflite_top1']:.1f}% | "
        f"{report['size_bytes'] / 1024:.0f} KB | {report['latency_ms']:.2f} ms |",
        "",
        f"On the {report['images']} validation images (none used for calibration), the file's "
        f"top-1 agrees with the Keras model's on {100 * report['top1_agreement']:.1f}%; mean "
        f"absolute difference of the probabilities {report['mean_abs_diff']:.4f}.",
        "",
        "Labels: packed in the file's metadata and in model.labels.txt. Input: RGB pixels "
        "in [0, 255] (the normalization is inside the graph); loads unchanged in MediaPipe's "
        "ImageClassifier.",
        "",
        "```json",
        json.dumps(report, indent=2),
        "```",
    ]
    write_atomic(os.path.join(output_dir, REPORT_NAME), "\n".join(lines) + "\n")
    if verbose:
        print("\n".join(lines[:6]))
    return report


def _tf_keras_adam(learning_rate):
    from keras_pf.mobile.qat import import_tfmot

    _, tf_keras = import_tfmot()
    return tf_keras.optimizers.Adam(learning_rate)


def finish_finetune(args, result):
    """`keras-pf finetune`'s one call after training: the mobile file, if asked for."""
    if not args.export or not result.get("paths"):
        return None
    # as finetune: a tfds source without --val is evaluated on its default split
    val = args.val or ":".join(str(args.train).split(":")[:2])
    return export_run(result["model"], result["class_names"], args.train, val,
                      args.output_dir, image_size=args.image_size, precision=args.export,
                      qat_epochs=args.qat_epochs, batch_size=args.batch_size, seed=args.seed,
                      verbose=0 if args.quiet else 1)
