"""`inception-fast train`: the paper's recipe on the bundled digits (default), CIFAR-10, an image
folder or synthetic data; noisy labels and joint optimization; torchrun for several processes."""
from __future__ import annotations

import argparse
import sys

from ..data import AUGMENTS, DATASETS
from ..models import MODEL_NAMES
from .noisy_labels import NOISE_KINDS, check_noise_rate
from .optim import OPTIMIZERS

# Per-data-set defaults where one value does not fit all (flags override).
DATASET_DEFAULTS = {
    # digits: twice the paper's lr (measured: 67% vs 43% test accuracy after 3 epochs).
    "digits": {"epochs": 12, "image_size": 75, "lr": 0.09},
    "synthetic": {"epochs": 3, "image_size": 75},
    "cifar10": {"epochs": 100, "image_size": 75},
    "imagefolder": {"epochs": 100, "image_size": 299},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="digits: scikit-learn's bundled 8x8 digits (default, no download)")
    g.add_argument("--data-dir", default=None, help="for cifar10 (python files) / imagefolder")
    g.add_argument("--image-size", type=int, default=None,
                   help="side of the model input; images are resized to it "
                        "(default: 75 for digits/cifar10/synthetic, 299 for imagefolder)")
    g.add_argument("--augment", default="auto", choices=AUGMENTS,
                   help="auto: none for digits/synthetic, crop-flip for cifar10")
    g.add_argument("--train-subset", type=int, default=0, help="keep N training samples")
    g.add_argument("--test-subset", type=int, default=0, help="keep N test samples")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers (imagefolder)")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="inception_v3", choices=MODEL_NAMES)
    g.add_argument("--variant", type=int, default=299, choices=(299, 151, 79),
                   help="the paper's section-9 variant (model input_size): 299 standard, "
                        "151 / 79 low-resolution stems")
    g.add_argument("--aux", default="auto", choices=("auto", "on", "off"),
                   help="auxiliary classifier: auto = on when the input is large enough")
    g.add_argument("--aux-weight", type=float, default=0.4)
    g.add_argument("--dropout", type=float, default=None, help="default: the model's (0.5)")
    g.add_argument("--classifier-init", default="zero", choices=("zero", "model"),
                   help="zero: start the final fc at zero (uniform predictions); model: keep "
                        "the model's (torchvision's) init")
    g.add_argument("--backend", default="auto", help="model backend: auto|torch|triton|cuda")
    g.add_argument("--loss-backend", default="auto", choices=("auto", "torch", "triton"))
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 autocast on GPU, fp32 on CPU")
    g.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                   help="auto: on for GPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="capture the whole training step (forward, backward, clipping, "
                        "optimizer, EMA) once as a CUDA graph and replay it (CUDA GPU only; "
                        "one process; bf16 or fp32)")

    g = p.add_argument_group("optimization (paper defaults)")
    g.add_argument("--epochs", type=int, default=None, help="default: 12 for digits")
    g.add_argument("--batch-size", type=int, default=32, help="GLOBAL batch (all processes)")
    g.add_argument("--accum-steps", type=int, default=1,
                   help="gradient accumulation: micro-batches per step in each process")
    g.add_argument("--eval-batch-size", type=int, default=128)
    g.add_argument("--optimizer", default="rmsprop", choices=OPTIMIZERS,
                   help="rmsprop: TensorFlow's (eps inside the root); sgd: SGD + momentum")
    g.add_argument("--lr", type=float, default=None,
                   help="for a global batch of --lr-ref-batch (default: the paper's 0.045; "
                        "0.09 for digits)")
    g.add_argument("--lr-ref-batch", type=int, default=32,
                   help="lr is scaled by global batch / this (0: no scaling)")
    g.add_argument("--lr-decay", type=float, default=0.94)
    g.add_argument("--lr-decay-epochs", type=float, default=2.0)
    g.add_argument("--warmup-epochs", type=float, default=0.0)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--rms-decay", type=float, default=0.9)
    g.add_argument("--rms-eps", type=float, default=1.0)
    g.add_argument("--weight-decay", type=float, default=4e-5,
                   help="L2 on conv/linear weights (TF-slim's 4e-5)")
    g.add_argument("--clip-grad", type=float, default=2.0, help="max grad norm (0: off)")
    g.add_argument("--ema-decay", type=float, default=0.9999,
                   help="EMA of the weights (TF-style: min(decay, (1+n)/(10+n)) after n steps)")
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("noisy labels / joint optimization (Tanaka et al. 2018)")
    g.add_argument("--noise", default="none", choices=NOISE_KINDS)
    g.add_argument("--noise-rate", type=float, default=0.0)
    g.add_argument("--noise-seed", type=int, default=0)
    g.add_argument("--joint-opt", action="store_true",
                   help="stage 1 with L_c + alpha L_p + beta L_e and label updates, then stage 2")
    g.add_argument("--alpha", type=float, default=1.2)
    g.add_argument("--beta", type=float, default=0.8)
    g.add_argument("--begin", type=int, default=None,
                   help="epoch from which labels are updated (default: 35%% of --epochs, as "
                        "the authors' 70 of 200)")
    g.add_argument("--stage2-epochs", type=int, default=None, help="default: --epochs")

    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="folder for metrics.jsonl, final.json, "
                                               "checkpoint.pt, model.pt, curves.png, labels")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    g.add_argument("--stop-after", type=int, default=0,
                   help="stop after N epochs in this invocation (as if interrupted)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill data-set defaults and check every setting; ValueError names the problem."""
    from ..models.shapes import min_input_size

    d = DATASET_DEFAULTS[args.dataset]
    if args.epochs is None:
        args.epochs = d["epochs"]
    if args.image_size is None:
        args.image_size = d["image_size"]
    if args.lr is None:
        args.lr = d.get("lr", 0.045)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size < 1 or args.accum_steps < 1:
        raise ValueError("--batch-size and --accum-steps must be at least 1")
    check_noise_rate(args.noise_rate)
    if args.noise == "none" and args.noise_rate > 0:
        raise ValueError("--noise-rate given without --noise symmetric|asymmetric")
    if args.noise != "none" and args.noise_rate == 0:
        raise ValueError(f"--noise {args.noise} needs --noise-rate in (0, 1)")
    if not 0 <= args.label_smoothing <= 1:
        raise ValueError(f"--label-smoothing must be in [0, 1], got {args.label_smoothing}")
    if args.begin is None:
        args.begin = max(1, round(0.35 * args.epochs))
    if args.stage2_epochs is None:
        args.stage2_epochs = args.epochs
    if args.cuda_graphs and args.compile:
        raise ValueError("--cuda-graphs and --compile: choose one (torch.compile's "
                         "mode='reduce-overhead' makes CUDA graphs of its own)")
    lo = min_input_size(args.variant)
    if args.image_size < lo:
        raise ValueError(f"--image-size {args.image_size} is too small for {args.model} "
                         f"(variant {args.variant}): it needs at least {lo}")
    lo_aux = min_input_size(args.variant, aux=True)
    fits = args.image_size >= lo_aux
    if args.aux == "on" and not fits:
        raise ValueError(f"--aux on: the auxiliary classifier needs an input of at least "
                         f"{lo_aux}x{lo_aux} for variant {args.variant} (got {args.image_size})")
    args.aux_on = args.aux == "on" or (args.aux == "auto" and fits)
    args.aux_note = None
    if args.aux == "auto" and not fits:
        args.aux_note = (f"aux classifier off: a {args.image_size}px input leaves too small a "
                         f"17x17-grid map for its 5x5 pool + 5x5 conv (needs >= {lo_aux}px "
                         f"for variant {args.variant})")
    return args


def parse_args(argv: list[str]) -> argparse.Namespace:
    """`inception-fast train` arguments from argv, defaults filled and checked (for code and
    tests that build the trainer's pieces: loop.Run(args).setup_stage)."""
    p = argparse.ArgumentParser(prog="inception-fast train")
    add_arguments(p)
    return finalize_args(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from ..backends import BackendUnavailableError

    try:
        finalize_args(args)
        from .loop import train

        if args.aux_note and int(__import__("os").environ.get("RANK", "0")) == 0:
            print(args.aux_note)
        train(args)
    except (ValueError, FileNotFoundError, ImportError, BackendUnavailableError) as e:
        print(f"inception-fast train: error: {e}", file=sys.stderr)
        return 2
    return 0
