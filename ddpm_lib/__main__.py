"""Command line: ``python -m ddpm_lib train | sample | export`` (chapters 2 and 10).

    python -m ddpm_lib train --data mnist-5k --out runs/mnist --model diffusers --steps 2000
    python -m ddpm_lib train --preset mnist --max-minutes 15 --out runs/mnist
    python -m ddpm_lib sample runs/mnist/pipeline --out grid.png --num-images 16
    python -m ddpm_lib export runs/mnist --out runs/mnist/pipeline

``train`` accepts every ``TrainConfig`` field as an option (``--batch-size``,
``--lr``, ``--mixed-precision`` ...; ``--help`` lists them with their defaults),
writes checkpoints, ``loss.csv``, ``loss.png`` and sample grids to ``--out``,
resumes from there when it is run again, and finally exports the EMA network
to ``--out/pipeline`` (a diffusers ``DDPMPipeline`` folder for ``--model
diffusers``, a ddpm_lib folder otherwise). Several GPUs:
``accelerate launch -m ddpm_lib train ...``.

Each sub-command is one entry of ``COMMANDS`` (name -> (add_arguments, run));
a new one (e.g. ``fid`` from ``ddpm_lib.evaluate``) is one more entry. Bad
input (a missing dataset folder, an out folder that cannot be written, a bad
option value) prints one line ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- options from TrainConfig

_RENAMED = {"out_dir": "out", "max_steps": "steps"}  # TrainConfig field -> CLI option
_MODELS = ("diffusers", "unet", "dit")


class CliError(Exception):
    """A problem with the command line's input: printed as one line, exit status 2."""


def _field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field of a dataclass: the help text of its option."""
    pattern = re.compile(r"^\s+(\w+): [^=]+=.*?#\s*(.+)$")
    return {m.group(1): m.group(2) for line in inspect.getsource(cls).splitlines() if (m := pattern.match(line))}


def _parse_bool_or_auto(text: str) -> bool | str:
    value = {"auto": "auto", "yes": True, "true": True, "no": False, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected auto, yes or no; got {text!r}")
    return value


def _parse_optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def _parse_minutes(text: str) -> float:
    try:
        minutes = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes such as 15; got {text!r}") from None
    if not minutes > 0 or minutes == float("inf"):
        raise argparse.ArgumentTypeError(f"the time budget must be a positive number of minutes; got {text!r}")
    return minutes


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    helps = _field_comments(TrainConfig)
    group = parser.add_argument_group("training (TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        name = "--" + _RENAMED.get(f.name, f.name).replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default,
                                  "help": f"{helps.get(f.name, '')} (default: {f.default})"}
        if f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type == "bool | str":  # data_on_device, channels_last
            kwargs["type"], kwargs["metavar"] = _parse_bool_or_auto, "{auto,yes,no}"
        elif f.name in ("grad_clip", "clip_x0"):
            kwargs["type"], kwargs["metavar"] = _parse_optional_float, "NORM|none"
        elif f.name == "max_minutes":
            kwargs["type"], kwargs["metavar"] = _parse_minutes, "MINUTES"
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[str(f.type)]
        group.add_argument(name, **kwargs)


# ----------------------------------------------------------------------------- train


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 32,64,64; got {text!r}")


def add_train_arguments(p: argparse.ArgumentParser, preset: str | None = None) -> None:
    from .presets import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from a measured recipe (data, network, training settings, sampler); "
                        "any option given as well overrides the preset's value")
    data = p.add_argument_group("data")
    data.add_argument("--data", required=preset is None,
                      help="'mnist-5k' (offline MNIST subset), a Hub dataset name, or a folder of images")
    data.add_argument("--split", choices=("train", "test"), default=None,
                      help="mnist-5k only: the 4,000 training or 1,000 held-out digits (default: all 5,000)")
    data.add_argument("--max-images", type=int, default=None, help="use at most this many images")
    data.add_argument("--flip", action="store_true", help="random horizontal flips (not for digits)")
    data.add_argument("--channels-in", type=int, default=None, choices=(1, 3), dest="data_channels",
                      help="1 (grayscale) or 3 (RGB); default: from the data")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=_MODELS, default="diffusers",
                       help="diffusers: a diffusers UNet2DModel (exports a DDPMPipeline folder); "
                            "unet: ddpm_lib's UNet; dit: ddpm_lib's DiT (default: diffusers)")
    model.add_argument("--channels", type=_int_list, default=[32, 64, 64],
                       help="feature maps per level, e.g. 32,64,64 (diffusers, unet)")
    model.add_argument("--layers-per-block", type=int, default=2, help="blocks per level (diffusers, unet)")
    model.add_argument("--attention", type=_int_list, default=None,
                       help="diffusers: how many low-resolution levels get attention (default 1); "
                            "unet: feature-map sizes with attention, e.g. 8 (default 8)")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout inside the blocks (diffusers, unet)")
    model.add_argument("--conditional", action="store_true",
                       help="class-conditional on the dataset's labels, with a null class for guidance")
    model.add_argument("--patch-size", type=int, default=4, help="DiT patch side")
    model.add_argument("--dim", type=int, default=128, help="DiT width")
    model.add_argument("--depth", type=int, default=4, help="DiT blocks")
    model.add_argument("--heads", type=int, default=4, help="DiT attention heads")
    _add_config_options(p)
    p.add_argument("--no-export", action="store_true", help="do not export OUT/pipeline at the end")
    if preset is not None:
        p.set_defaults(**_preset_defaults(preset))


def _preset_defaults(name: str) -> dict[str, Any]:
    """The options of ``--preset name`` as argparse defaults (options on the command line still win)."""
    from .presets import get_preset

    pre = get_preset(name)
    net = pre.model
    return {
        **pre.train, "data": pre.data["name_or_path"], "split": pre.data.get("split"),
        "model": "diffusers", "channels": list(net["block_out_channels"]),
        "layers_per_block": net["layers_per_block"], "attention": [net["attention_blocks"]],
        "conditional": pre.conditional,
    }


def _build_model(args: argparse.Namespace, channels: int, num_classes: int | None):
    from . import models

    size = args.image_size
    if args.model == "diffusers":
        attention = args.attention[0] if args.attention else 1
        return models.diffusers_unet(image_size=size, in_channels=channels, block_out_channels=args.channels,
                                     layers_per_block=args.layers_per_block, attention_blocks=attention,
                                     num_classes=num_classes, dropout=args.dropout)
    if args.model == "unet":
        return models.UNet(in_channels=channels, image_size=size, channels=args.channels,
                           layers_per_level=args.layers_per_block, dropout=args.dropout,
                           attention_resolutions=args.attention if args.attention is not None else [8],
                           num_classes=num_classes)
    return models.DiT(image_size=size, in_channels=channels, patch_size=args.patch_size, dim=args.dim,
                      depth=args.depth, heads=args.heads, num_classes=num_classes)


def run_train(args: argparse.Namespace) -> int:
    from .data import load_images
    from .models import count_parameters
    from .train import TrainConfig, Trainer

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    out = Path(cfg.out_dir)
    dataset = load_images(args.data, image_size=cfg.image_size, channels=args.data_channels, flip=args.flip,
                          max_images=args.max_images, seed=cfg.seed, **({"split": args.split} if args.split else {}))
    num_classes = None
    if args.conditional:
        num_classes = dataset.num_classes
        if not num_classes:
            raise CliError(f"--conditional needs labelled data, but {args.data} has no labels "
                           "(a folder needs one subfolder per class).")
    model = _build_model(args, dataset.image_shape[0], num_classes)
    trainer = Trainer(model, dataset, cfg)
    if trainer.is_main:
        budget = f"{cfg.max_minutes:g} minutes (at most {cfg.max_steps} steps)" if cfg.max_minutes else \
            f"{cfg.max_steps} steps"
        print(f"{args.model} model, {count_parameters(model):,} parameters; {len(dataset)} images "
              f"from {args.data}; {budget}; device {trainer.device}; out {out}", file=sys.stderr)
    history = trainer.fit()
    if not trainer.is_main:
        return 0
    _plot_loss(out)
    if not args.no_export:
        trainer.export(out / "pipeline")
        print(f"exported the EMA network to {out / 'pipeline'}", file=sys.stderr)
    if history.rows:
        print(f"step {history.rows[-1]['step']}: loss {history.rows[-1]['loss']:.4f}", file=sys.stderr)
    return 0


def _plot_loss(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from .viz import plot_loss

    fig = plot_loss(out / "loss.csv", title=f"Training loss ({out.name})")
    fig.savefig(out / "loss.png", dpi=120)


# ----------------------------------------------------------------------------- sample


FROM_EXPORT = object()  # --clip-x0 not given: use what the model's export recorded (not a string: argparse
# would parse a string default with the option's type)


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a pipeline folder, a name in pretrained/ (e.g. ddpm-mnist) or a Hub id")
    p.add_argument("--out", required=True, help="PNG file for the grid")
    p.add_argument("--num-images", type=int, default=16, help="images in the grid (default: 16)")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: up to 8)")
    p.add_argument("--sampler", default=None,
                   help="any sampler of dl.sample (default: the one the model's export recorded, else dpmpp_2m)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: as recorded, else 20)")
    p.add_argument("--labels", type=_int_list, default=None,
                   help="class labels for a conditional model, cycled over the grid (default: 0, 1, 2, ...)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance weight w")
    p.add_argument("--clip-x0", type=_parse_optional_float, default=FROM_EXPORT, metavar="C|none",
                   help="clip each step's x0 estimate to [-C, C], e.g. 1 for the image range (default: as the "
                        f"export recorded, else {_default_clip_x0() or 'none'} as dl.sample; none: no clipping)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps ... (default: cuda when available, else cpu)")


def _default_clip_x0():
    from .samplers import DEFAULT_CLIP_X0

    return DEFAULT_CLIP_X0


def _sample_device(requested: str | None) -> str:
    """The device to sample on: ``requested``, else "cuda" when torch sees a GPU, else "cpu"."""
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from .pipelines import load_pretrained
    from .samplers import sample
    from .viz import make_grid_image

    if args.num_images < 1:
        raise CliError(f"--num-images must be >= 1; got {args.num_images}.")
    out = _writable_file(Path(args.out))
    pre = load_pretrained(args.model, device=_sample_device(args.device))
    device = next(pre.model.parameters()).device
    shape = pre.image_shape
    if shape is None:
        raise CliError(f"{args.model} does not say its image size; sample it from Python with dl.sample.")
    labels = null = None
    if pre.num_classes:
        cycle = torch.tensor(args.labels or list(range(pre.num_classes)))
        labels = cycle.repeat(-(-args.num_images // len(cycle)))[: args.num_images].to(device)
        null = pre.num_classes if args.guidance_scale != 1.0 else None
    elif args.labels or args.guidance_scale != 1.0:
        raise CliError(f"{args.model} is not class-conditional: --labels and --guidance-scale do not apply.")
    g = torch.Generator(device=device).manual_seed(args.seed)
    recorded = pre.sampling  # how the model's recipe was measured, or dl.sample's defaults
    sampler, steps = args.sampler or recorded["sampler"], args.steps or recorded["steps"]
    clip_x0 = recorded["clip_x0"] if args.clip_x0 is FROM_EXPORT else args.clip_x0
    x = sample(pre.model, (args.num_images, *shape), pre.schedule, sampler=sampler, steps=steps,
               prediction=pre.prediction, generator=g, class_labels=labels, guidance_scale=args.guidance_scale,
               null_class=null, clip_x0=clip_x0)
    make_grid_image(x.clamp(-1, 1).float().cpu(), nrow=args.nrow, value_range=(-1, 1)).save(out)
    print(f"wrote {args.num_images} samples to {out}", file=sys.stderr)
    return 0


def _writable_file(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as e:
        raise CliError(f"cannot write {path} ({e.strerror or e}); choose another --out.") from e
    return path


# ----------------------------------------------------------------------------- export


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a training folder (the trainer's out_dir) or one checkpoint file")
    p.add_argument("--out", required=True, help="the pipeline folder to write")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA average")


def run_export(args: argparse.Namespace) -> int:
    from .models import build_model
    from .pipelines import export_pipeline
    from .schedules import make_schedule
    from .checkpoint import latest_checkpoint, load_checkpoint, schedule_from_state

    run = Path(args.run)
    if run.is_file():
        path, state = run, load_checkpoint(run)
    elif run.is_dir():
        found = latest_checkpoint(run)
        if found is None:
            raise CliError(f"no checkpoint in {run / 'checkpoints'}; pass a training folder written by "
                           "'python -m ddpm_lib train' (its --out).")
        path, state = found
    else:
        raise CliError(f"{run} does not exist; pass a training folder or a checkpoint file.")
    if state.get("model_config") is None:
        raise CliError(f"{path} was trained with a network ddpm_lib cannot rebuild from JSON; "
                       "export it from Python with trainer.export(path).")
    cfg = state["config"]
    model = build_model(state["model_config"])
    model.load_state_dict(state["model"]["weights"] if args.no_ema else state["ema"]["model"])
    # The checkpoint's own schedule (custom ones included); older checkpoints name theirs.
    schedule = schedule_from_state(state) or make_schedule(cfg["schedule"], num_timesteps=cfg["num_timesteps"])
    export_pipeline(model.eval(), schedule, args.out, prediction=cfg["prediction"],
                    metadata={"train_config": cfg, "step": state["step"], "checkpoint": str(path),
                              "ema": not args.no_ema})
    print(f"exported step {state['step']} of {path} to {args.out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- entry point

# name -> (add its arguments, run it). The evaluation issue adds "fid" here.
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": (add_train_arguments, run_train),
    "sample": (add_sample_arguments, run_sample),
    "export": (add_export_arguments, run_export),
}
_SUMMARIES = {
    "train": "train a diffusion model on a dataset; checkpoints, loss curve, samples and a pipeline go to --out",
    "sample": "draw a grid of samples from a pipeline folder or a pretrained name into a PNG",
    "export": "turn a training folder (or checkpoint) into a pipeline folder",
}


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``preset``, the train options default to that preset's values."""
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (add_arguments, _) in COMMANDS.items():
        summary = _SUMMARIES.get(name, "")
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        add_arguments(sub_parser, preset) if name == "train" else add_arguments(sub_parser)
    return parser


def _preset_in(argv: list[str]) -> str | None:
    """The value of ``--preset`` in a train command line (checked against the presets by argparse later)."""
    from .presets import PRESETS

    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--preset="):
            value = arg.split("=", 1)[1]
        else:
            continue
        return value if value in PRESETS else None  # an unknown name: argparse lists the valid ones
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    preset = _preset_in(argv) if argv[:1] == ["train"] else None
    args = build_parser(preset).parse_args(argv)
    from .data import DatasetUnavailableError
    from .train import CheckpointError

    expected = (CliError, ValueError, FileNotFoundError, FileExistsError, PermissionError, CheckpointError,
                DatasetUnavailableError, FloatingPointError)
    try:
        return COMMANDS[args.command][1](args)
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
