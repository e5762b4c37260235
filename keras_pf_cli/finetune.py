"""`keras-pf finetune`: fine-tune a model on an image folder or tfds:NAME
(`keras_pf.training.finetune.finetune`), then optionally QAT and a mobile file
(`keras_pf.mobile.pipeline`)."""

import argparse

from keras_pf_cli.args import (json_object, non_negative_float, non_negative_int, one_of,
                               positive_float, positive_int, probability)


EPILOG = """multi-worker training: start the same command on every worker, each with
TF_CONFIG describing the cluster and its own index, e.g. on the first of two:
  TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
              "task": {"type": "worker", "index": 0}}' keras-pf finetune ... --strategy multiworker
worker 0 (or the "chief" task) writes the outputs. The other workers write to
OUTPUT_DIR/.worker-N, removed at the end. A worker waits at most
$KERAS_PF_WORKER_TIMEOUT seconds (default 300) for the others to join. After a lost
worker, restart every worker with --resume: the job continues from the last epoch."""


def add_arguments(parser):
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", help="a keras_pf model name (e.g. PFResNet50Max; an unknown name "
                                      "lists them all) or a generic builder (PFResNet, PFViT, PFPiT) "
                                      "with --model-args")
    parser.add_argument("train", help="training data: image folder (one subfolder per class) or tfds:NAME[:SPLIT]")
    parser.add_argument("--val", help="validation data (default for tfds: its validation, else test split)")
    parser.add_argument("-o", "--output-dir", default="finetune_output", help="checkpoints, model, curves")
    parser.add_argument("--weights", default="imagenet",
                        help="weights tag, .weights.h5/.pth path, or 'none' for random init (default imagenet)")
    parser.add_argument("--model-args", type=json_object, default=None,
                        help='JSON keyword arguments for a generic builder, e.g. \'{"depths": [1,1,1,1]}\'')
    parser.add_argument("--image-size", type=positive_int, default=224)
    parser.add_argument("--batch-size", type=positive_int, default=32, help="global batch size")
    parser.add_argument("--head-epochs", type=non_negative_int, default=0,
                        help="phase 1: epochs with the backbone frozen")
    parser.add_argument("--epochs", type=non_negative_int, default=5, help="phase 2: epochs with all layers trainable")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (phase 1, or the only phase)")
    parser.add_argument("--fine-tune-lr", type=positive_float, default=1e-4,
                        help="phase 2 learning rate after a head phase")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    parser.add_argument("--dropout", type=probability, default=0.0)
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 compute")
    parser.add_argument("--strategy", default="default",
                        help="tf.distribute strategy: default, mirrored or multiworker (reads TF_CONFIG)")
    parser.add_argument("--logical-cpus", type=non_negative_int, default=0,
                        help="split the CPU into N logical devices (to try mirrored without GPUs)")
    parser.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    parser.add_argument("--manual-dir", help="tensorflow-datasets manual_dir (e.g. ImageNet tar files)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its newest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # the mobile file after training (keras_pf.mobile.pipeline)
    parser.add_argument("--export", default=None,
                        help="after training, write model.tflite in this precision (float32, "
                             "float16, dynamic or int8; metadata, labels, normalization inside: "
                             "MediaPipe-ready) and mobile_report.md to the output folder")
    parser.add_argument("--qat-epochs", type=non_negative_int, default=0,
                        help="epochs of quantization-aware training before an int8 export "
                             "(0: post-training int8 calibrated on training images)")


def run(args):
    from keras_pf.mobile import pipeline
    from keras_pf.mobile.export import PRECISIONS
    from keras_pf.training.finetune import STRATEGIES, configure_logical_cpus, finetune

    one_of("--strategy", args.strategy, STRATEGIES)
    one_of("--export", args.export, PRECISIONS)
    pipeline.check_mobile_arguments(args)
    if args.logical_cpus:
        configure_logical_cpus(args.logical_cpus)
    weights = None if str(args.weights).lower() == "none" else args.weights
    result = finetune(
        args.model, args.train, args.val, args.output_dir, weights=weights, model_args=args.model_args,
        image_size=args.image_size, batch_size=args.batch_size, head_epochs=args.head_epochs,
        epochs=args.epochs, learning_rate=args.lr, fine_tune_learning_rate=args.fine_tune_lr,
        weight_decay=args.weight_decay, dropout=args.dropout, mixed_precision=args.mixed_precision,
        strategy=args.strategy, data_dir=args.data_dir, manual_dir=args.manual_dir, seed=args.seed,
        resume=args.resume, verbose=0 if args.quiet else 1,
    )
    evaluation = result["evaluation"]
    print(f"final evaluation: loss {evaluation['loss']:.4f}, accuracy {evaluation['accuracy']:.4f}")
    if result["paths"]:
        print(f"wrote {result['paths']['model']}, {result['paths']['plot']}, {result['paths']['history']}")
    pipeline.finish_finetune(args, result)
