"""`keras-pf benchmark`: latency, size and FLOPs side by side with keras.applications
ResNet50 (the work is `keras_pf.benchmark.run.benchmark_models`)."""

from keras_pf_cli.args import non_negative_int, one_of, positive_int


def add_arguments(parser):
    parser.add_argument("--models", nargs="+", default=None,
                        help="keras.applications baselines (ResNet50, MobileNetV2) and "
                             "keras_pf.MODELS names; default: ResNet50 MobileNetV2 PFResNet50Max "
                             "PFResNet50Hybrid PFViTSmall PFPiTSmall")
    parser.add_argument("--image-size", type=positive_int, default=224)
    parser.add_argument("--runs", type=positive_int, default=20, help="timed runs (median)")
    parser.add_argument("--warmup", type=non_negative_int, default=3)
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


def run(args):
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

