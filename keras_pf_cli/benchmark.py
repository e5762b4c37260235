"""`keras-pf benchmark`: latency, size and FLOPs side by side with keras.applications
ResNet50 (the work is `keras_pf.benchmark.run.benchmark_models`); with `--train`, the
fit loop's step time instead (`keras_pf.benchmark.train.benchmark_training`)."""

from keras_pf_cli.args import UsageError, non_negative_int, one_of, positive_int

# Options of the inference tables only (default None, so that a given one is seen)
INFERENCE_ONLY = ("--precisions", "--keras-modes", "--op-profile", "--int8-fidelity", "--runtimes")


def add_arguments(parser):
    parser.add_argument("--models", nargs="+", default=None,
                        help="keras.applications baselines (ResNet50, MobileNetV2) and "
                             "keras_pf.MODELS names; default: ResNet50 MobileNetV2 PFResNet50Max "
                             "PFResNet50Hybrid PFViTSmall PFPiTSmall")
    parser.add_argument("--image-size", type=positive_int, default=224)
    parser.add_argument("--runs", type=positive_int, default=None,
                        help="timed runs (median); default 20, with --train 5 rounds")
    parser.add_argument("--warmup", type=non_negative_int, default=None,
                        help="untimed runs first; default 3, with --train 2")
    parser.add_argument("--threads", type=positive_int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--precisions", nargs="*", default=None,
                        help="TFLite precisions among float32 float16 dynamic int8 (default: "
                             "all; none: skip TFLite)")
    parser.add_argument("--keras-modes", nargs="*", default=None,
                        help="Keras latency modes among compiled folded xla (default: all; "
                             "none: skip)")
    parser.add_argument("--op-profile", nargs="*", metavar="MODEL",
                        help="also break the TFLite float32 time down by op, for these "
                             "models (all benchmarked ones if none is named)")
    parser.add_argument("--int8-fidelity", nargs="*", metavar="MODEL",
                        help="also train these models briefly on generated images and compare "
                             "each precision's file with them on held-out images (all "
                             "benchmarked ones if none is named)")
    parser.add_argument("--fidelity-size", type=positive_int, default=64,
                        help="input side for --int8-fidelity training")
    parser.add_argument("--fidelity-epochs", type=positive_int, default=3)
    parser.add_argument("--output-dir", default="benchmarks")
    parser.add_argument("--runtimes", nargs="*", metavar="RUNTIME",
                        help="instead: time the models in each runtime (litert onnxruntime "
                             "openvino onnxruntime-dynamic onnxruntime-int8 openvino-default; "
                             "all if none is named), ratios to ResNet50 per runtime; default "
                             "models: ResNet50 and the models with published weights. Writes "
                             "runtimes.json and runtimes.md")
    parser.add_argument("--train", action="store_true",
                        help="time the train step (train_on_batch, SGD) and images/s of each "
                             "model and of its max-pool-free bound network (a study) against "
                             "ResNet50 on the current Keras backend, instead of inference; "
                             "writes train_<backend>[_jit].json and .md")
    parser.add_argument("--jit", action="store_true",
                        help="with --train: compile the steps with XLA (jit_compile=True); "
                             "without it, what fit does by default (jit_compile=\"auto\": "
                             "XLA on JAX, none on PyTorch or on TensorFlow on a CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="with --train: images per step (default 8)")
    parser.add_argument("--keras-layers", action="store_true",
                        help="with --train: also time each model with keras' own "
                             "MaxPooling2D and Conv2D in place of keras_pf's FastMaxPooling2D "
                             "and FastGroupedConv2D (a study: the network as built before "
                             "issue 23) and report the gain over it")


def check_mode(args):
    """Options that do not apply to the chosen mode (inference tables or --train) are a
    usage error rather than silently ignored."""
    if args.train:
        given = [o for o in INFERENCE_ONLY if getattr(args, o[2:].replace("-", "_")) is not None]
        if given:
            raise UsageError(f"argument {given[0]}: applies to the inference tables and "
                             "--runtimes, not --train")
        return
    for option in ("--jit", "--batch-size", "--keras-layers"):
        if getattr(args, option[2:].replace("-", "_")) not in (None, False):
            why = ("" if option == "--keras-layers" else " (the inference tables time batch 1 "
                   "and have their own XLA column: --keras-modes xla)")
            raise UsageError(f"argument {option}: applies to --train only{why}")


def run_train(args):
    from keras_pf.benchmark.train import benchmark_training, format_markdown, output_stem

    report = benchmark_training(args.models, args.image_size,
                                8 if args.batch_size is None else args.batch_size,
                                5 if args.runs is None else args.runs,
                                2 if args.warmup is None else args.warmup,
                                jit_compile=True if args.jit else "auto",
                                keras_layers=args.keras_layers, output_dir=args.output_dir)
    print(format_markdown(report))
    stem = output_stem(report["machine"]["backend"], args.jit)
    print(f"Wrote {stem}.json and {stem}.md to {args.output_dir}")


def run(args):
    check_mode(args)
    if args.train:
        return run_train(args)
    args.runs = 20 if args.runs is None else args.runs
    args.warmup = 3 if args.warmup is None else args.warmup
    from keras_pf.benchmark.run import DEFAULT_MODELS, KERAS_MODES, benchmark_models, format_markdown
    from keras_pf.mobile.export import PRECISIONS

    if args.runtimes is not None:
        from keras_pf.benchmark import runtimes

        report = runtimes.benchmark_runtimes(args.models or list(runtimes.DEFAULT_MODELS),
                                             args.runtimes or list(runtimes.VARIANTS),
                                             args.image_size, args.runs, args.warmup,
                                             args.threads, args.output_dir)
        print(runtimes.format_markdown(report))
        print(f"Wrote runtimes.json and runtimes.md to {args.output_dir}")
        return
    args.models = list(DEFAULT_MODELS) if args.models is None else args.models
    args.precisions = list(PRECISIONS) if args.precisions is None else args.precisions
    args.keras_modes = list(KERAS_MODES) if args.keras_modes is None else args.keras_modes
    one_of("--precisions", args.precisions, PRECISIONS)
    one_of("--keras-modes", args.keras_modes, KERAS_MODES)

    def chosen(option):  # flag alone: every benchmarked model
        return args.models if option == [] else (option or ())

    report = benchmark_models(args.models, args.image_size, args.runs, args.warmup,
                              args.threads, args.precisions, args.keras_modes, args.output_dir,
                              op_profile_models=chosen(args.op_profile),
                              fidelity_models=chosen(args.int8_fidelity),
                              fidelity_size=args.fidelity_size,
                              fidelity_epochs=args.fidelity_epochs)
    print(format_markdown(report))
    print(f"Wrote results.json, results.md and top1_vs_latency.png to {args.output_dir}")

