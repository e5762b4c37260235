#!/usr/bin/env python
"""Convert a folder of the paper's original checkpoints into the files to publish, and
record each converted file's name, size and sha256 (and the original's sha256) in the
weights registry (`keras_pf/weights/registry.py`).

    python tools/convert_weights.py ~/pf_checkpoints --output weights/

A checkpoint is matched to its registry entry by its file name: either
`<weights id>_<tag>.pth` (e.g. `pf_resnet50_hybrid_long.pth`) or any name containing
the Google Drive id of its source. Unmatched files are listed and left alone. Upload
`--output`'s files to a mirror and set `KERAS_PF_WEIGHTS_URL` to it; users then get the
converted files, checked against the recorded sha256, without Google Drive.
"""

import argparse
import os
import sys


def match_checkpoint(filename, table):
    """`(weights_id, tag)` whose checkpoint `filename` is, or None."""
    from keras_pf.weights.download import gdrive_id

    stem = os.path.basename(filename).split(".")[0]
    for weights_id, entry in table.items():
        for tag, info in entry["tags"].items():
            drive_id = gdrive_id(info["source"])
            if stem == f"{weights_id}_{tag}" or (drive_id and drive_id in filename):
                return weights_id, tag
    return None


def convert_folder(folder, output_dir, progress=print):
    """Convert every recognized checkpoint of `folder` into `output_dir`; update the
    in-memory registry. Returns `[(weights_id, tag, output path)]` and unmatched names."""
    from keras_pf.models import resolve
    from keras_pf.weights import TORCH_SUFFIXES, registry
    from keras_pf.weights.convert import save_converted
    from keras_pf.weights.download import sha256_of

    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory of original checkpoints")
    os.makedirs(output_dir, exist_ok=True)
    done, unmatched = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (os.path.isfile(path) and name.endswith(TORCH_SUFFIXES)):
            continue
        match = match_checkpoint(name, registry.WEIGHTS)
        if match is None:
            unmatched.append(name)
            continue
        weights_id, tag = match
        info = registry.WEIGHTS[weights_id]["tags"][tag]
        output = os.path.join(output_dir, info["file"])
        progress(f"{name} -> {output} ({weights_id}/{tag})")
        save_converted(resolve.weights_architecture(weights_id), path, output)
        info.update(size=os.path.getsize(output), sha256=sha256_of(output),
                    source_sha256=sha256_of(path))
        done.append((weights_id, tag, output))
    return done, unmatched


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="folder of original checkpoints (.pth)")
    parser.add_argument("--output", default="weights", help="where to write (default %(default)s)")
    parser.add_argument("--no-record", action="store_true",
                        help="do not write sizes and sha256 into the registry")
    args = parser.parse_args(argv)
    from keras_pf.weights import registry

    done, unmatched = convert_folder(args.folder, args.output)
    for name in unmatched:
        print(f"skipped {name}: name it <weights id>_<tag>.pth or keep its Google Drive id "
              "in the name (see `keras-pf weights list`)")
    for weights_id, tag, output in done:
        info = registry.WEIGHTS[weights_id]["tags"][tag]
        print(f"{weights_id}/{tag}: {output} {info['size']} bytes sha256={info['sha256']}")
    if done and not args.no_record:
        registry.write_table()
        print(f"recorded in {registry.__file__}")
    if not done:
        print("no checkpoint converted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError) as error:
        print(f"convert_weights: error: {error}", file=sys.stderr)
        sys.exit(2)
