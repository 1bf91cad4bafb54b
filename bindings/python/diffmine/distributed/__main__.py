"""``python -m diffmine.distributed mine``: ``diffmine mine`` on a Ray cluster. It takes the options of
``diffmine mine`` (left out: the library's defaults, as there) and how the cluster runs the work."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import diffmine

from ._pipeline import Settings, run
from ._workdir import OptionsMismatch

# Mining options: (flag, the library's keyword, type, help).
_MINING = [
    ("--prompt", "prompt_template", str, "The label prompt, {label} standing for the label."),
    ("--null-prompt", "null_prompt", str, "The prompt the label prompt is compared with."),
    ("--samples", "samples", int, "Number of (noise, timestep) samples."),
    ("--seed", "seed", int, "Seed of the (noise, timestep) draws."),
    ("--batch", "batch", int, "Samples per UNet call."),
    ("--resize", "resize", int, "Images are resized so their shorter side has this many pixels."),
    ("--patch", "patch", int, "Side of the square patches, in pixels."),
    ("--per-image", "per_image", int, "Patches kept per image."),
    ("--top", "top", int, "Patches kept per label."),
    ("--ensemble", "ensemble", int, "DIFT features averaged over this many noise draws."),
    ("--clusters", "clusters", int, "k of k-means."),
    ("--restarts", "restarts", int, "k-means runs from different starts; the best is kept."),
    ("--t-min", "t_min", float, "Lower end of the timestep range, as a fraction of the training steps."),
    ("--t-max", "t_max", float, "Upper end of the timestep range, as a fraction of the training steps."),
]
# Switches of how the samples are drawn: (flag, the library's keyword, help); absent, the library's choice.
_SWITCHES = [
    ("--antithetic", "antithetic", "Pairs of samples (noise, t) and (-noise, t) instead of independent draws."),
    ("--stratified", "stratified", "Each timestep drawn in its own stratum of the range instead of over the whole range."),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffmine.distributed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    mine = commands.add_parser("mine", help="Mines typical elements of each label on a Ray cluster.")
    model = mine.add_argument_group("Model")
    model.add_argument("--model", required=True, metavar="DIR|FILE", help="The diffusers model folder, or a single-file checkpoint.")
    model.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (on every worker).")
    model.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16.")
    model.add_argument("--variant", help="Weight file variant, e.g. fp16.")
    model.add_argument("--base", metavar="DIR", help="Components the model folder lacks come from DIR.")
    model.add_argument("--lora", metavar="FILE", help="A LoRA adapter merged into the model's weights.")
    model.add_argument("--lora-scale", type=float, default=1.0, help="The adapter's scale.")
    mine.add_argument("--data", required=True, metavar="DIR_OR_CSV",
                      help="A folder with a subfolder of images per label, or a CSV of path,label rows (paths every worker can read).")
    mine.add_argument("--out", required=True, metavar="DIR", help="Where the report is written.")
    mining = mine.add_argument_group("Mining (default: the library's, as diffmine mine)")
    for flag, name, kind, text in _MINING:
        mining.add_argument(flag, dest=name, type=kind, help=text)
    mining.add_argument("--latent", choices=["sample", "mean"], help="Which latent of the VAE posterior is noised.")
    for flag, name, text in _SWITCHES:
        mining.add_argument(flag, dest=name, action="store_true", default=None, help=text)
    cluster = mine.add_argument_group("Cluster")
    cluster.add_argument("--workdir", required=True, metavar="DIR_OR_URI",
                         help="Working folder of per-image results (a path every node sees, or a pyarrow/fsspec URI such as s3://...).")
    cluster.add_argument("--address", help="The Ray cluster's address (default: start a local one).")
    cluster.add_argument("--actors-per-node", type=int, default=1, help="Model actors per node (default 1).")
    cluster.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each actor reserves (default 0).")
    cluster.add_argument("--batch-size", type=int, default=4, help="Images per batch handed to an actor (default 4).")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    model = {name: getattr(args, name) for name in ("model", "device", "dtype", "variant", "base", "lora", "lora_scale")}
    # Workers open the model and the working folder from their own folder: absolute paths.
    model.update({name: os.path.abspath(model[name]) for name in ("model", "base", "lora") if model[name] is not None})
    workdir = args.workdir if "://" in args.workdir else os.path.abspath(args.workdir)
    given = [name for _, name, _, _ in _MINING] + ["latent"] + [name for _, name, _ in _SWITCHES]
    mining = {name: getattr(args, name) for name in given if getattr(args, name) is not None}
    settings = Settings(model=model, mining=mining, data=args.data, out=args.out, workdir=workdir, address=args.address,
                        actors_per_node=args.actors_per_node, gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size)
    try:
        summary = run(settings)
    except (OptionsMismatch, diffmine.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (path, label), reason in sorted(summary.skipped.items()):
        print(f"skipped unreadable image {path} ({label}): {reason}")
    print(f"scored {summary.scored} images, {summary.reused} from the working folder, {len(summary.skipped)} skipped; "
          f"actors on {len(summary.nodes)} nodes, diffmine from {', '.join(sorted(summary.libraries))}")
    print("stage times: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in summary.stages.items()))
    print(f"mined in {summary.seconds:.0f} s; report: {settings.out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
