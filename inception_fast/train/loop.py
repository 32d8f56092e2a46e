"""The training loop: one or two stages (joint optimization adds stage 2), each a fresh model,
optimizer, schedule and EMA; per-epoch evaluation, metrics, atomic checkpoints, exact resume."""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import time

import torch

from ..data import get_dataset
from ..losses import joint_optimization_loss, label_smoothing_cross_entropy
from ..models import get_model
from . import checkpoint as ckpt_io
from .distributed import (DistInfo, GlobalBatchSampler, all_reduce_sum, barrier,
                          check_global_batch, gather_cat, gather_objects, init_distributed,
                          shutdown)
from .ema import build_ema
from .graphs import capture_step
from .joint_opt import EpochOutputs, LabelState
from .noisy_labels import make_noisy_labels
from .optim import build_optimizer
from .schedule import build_scheduler, current_lr, scaled_lr
from .step import Stage, TrainStep, check_cuda_graphs

CHECKPOINT = "checkpoint.pt"


def _model_kwargs(name: str, kw: dict) -> dict:
    """Keep the keyword arguments the named model's constructor takes."""
    if name == "inception_v3_paper":
        try:
            from ..models.inception_v3_paper import inception_v3_paper as fn
        except ImportError:
            return kw
        params = inspect.signature(fn).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return {k: v for k, v in kw.items() if k in params}
    return kw


def build_model(args, num_classes: int, aux: bool) -> torch.nn.Module:
    kw = dict(num_classes=num_classes, aux_logits=aux, backend=args.backend,
              input_size=args.variant)
    if args.dropout is not None:
        kw["dropout"] = args.dropout
    model = get_model(args.model, **_model_kwargs(args.model, kw))
    if args.classifier_init == "zero":
        # Zero classifier: uniform predictions at the start (loss ln K). With torchvision's
        # init the logits start with std ~5 and the first steps are spent undoing that.
        fc = getattr(model, "fc", None)
        if isinstance(fc, torch.nn.Linear):
            torch.nn.init.zeros_(fc.weight)
            torch.nn.init.zeros_(fc.bias)
    return model


class Run:
    """Everything one training invocation shares across stages."""

    def __init__(self, args, log=print):
        self.args = args
        if args.device == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            dev = args.device
        if dev == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda but no CUDA GPU is available")
        self.info: DistInfo = init_distributed(dev)
        self.device = torch.device(f"cuda:{self.info.local_rank}" if dev == "cuda" else "cpu")
        check_global_batch(args.batch_size, self.info.world, args.accum_steps)
        self.log = log if self.info.is_main else (lambda *a, **k: None)
        prec = args.precision
        if prec == "auto":
            prec = "bf16" if self.device.type == "cuda" else "fp32"
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
        if args.cuda_graphs:
            check_cuda_graphs(self.device, self.info.world, prec)
        self.channels_last = self.device.type == "cuda" if args.channels_last == "auto" else \
            args.channels_last == "on"
        self.ds = get_dataset(args.dataset, args.data_dir, args.image_size, args.train_subset,
                              args.test_subset, seed=args.seed)
        self.augment = self.ds.default_augment if args.augment == "auto" else args.augment
        k = self.ds.num_classes
        clean = self.ds.train.targets
        if args.noise != "none":
            noisy, self.flip_rate = make_noisy_labels(clean, k, args.noise, args.noise_rate,
                                                      args.noise_seed, args.dataset)
        else:
            noisy, self.flip_rate = clean.clone(), 0.0
        if len(clean) and not bool(((noisy >= 0) & (noisy < k)).all()):
            # Checked once here, so the loss skips it per step (a host sync each on a GPU).
            raise ValueError(f"{args.dataset}: a training label is not a class index in [0, {k})")
        self.labels = LabelState(clean, noisy, k, begin=args.begin, track=args.joint_opt)
        if args.noise != "none":
            self.log(f"{args.noise} noise, rate {args.noise_rate} (seed {args.noise_seed}): "
                     f"{self.flip_rate:.4f} of the {len(clean)} training labels flipped")
        self.history: list[dict] = []
        self.out = args.out
        if self.out and self.info.is_main:
            os.makedirs(self.out, exist_ok=True)
        self.quiet = args.quiet or not sys.stderr.isatty() or not self.info.is_main
        self.epochs_ran = 0  # in this invocation (for --stop-after)

    # ---- one stage -------------------------------------------------------------------------
    def loss_fn(self, stage: int):
        """(logits, target) -> (loss, terms) for `stage`; target as batch_inputs makes it."""
        a = self.args
        if stage == 1 and not a.joint_opt:
            return lambda logits, y: (label_smoothing_cross_entropy(
                logits, y, eps=a.label_smoothing, backend=a.loss_backend,
                check_values=False), {})
        # Stage 2: plain soft-label cross-entropy on the recovered labels (the authors'
        # second step); KL(soft || p) has the same gradient.
        alpha, beta = (a.alpha, a.beta) if stage == 1 else (0.0, 0.0)
        return lambda logits, soft: joint_optimization_loss(
            logits, soft, alpha=alpha, beta=beta, backend=a.loss_backend, check_values=False)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        # A captured step must not reuse autocast's cast-weight cache across replays
        # (torch.cuda.graphs: cache_enabled=False inside a graph).
        return torch.autocast(self.device.type, dtype=self.amp_dtype,
                              cache_enabled=not self.args.cuda_graphs)

    def batch_inputs(self, st: Stage, x: torch.Tensor, idx: torch.Tensor, hard_all):
        """A loaded batch -> the step's device inputs (x, target, hard)."""
        a, dev = self.args, self.device
        x = self.ds.prepare(x, a.image_size, self.augment, dev)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = self.labels.noisy if st.stage == 1 and not a.joint_opt else self.labels.soft
        return x, labels[idx].to(dev), hard_all[idx].to(dev)

    def train_epoch(self, st: Stage, epoch: int):
        a = self.args
        st.model.train()
        st.sampler.set_epoch(epoch)
        batches = st.sampler.batches()
        outputs = EpochOutputs() if st.record else None
        st.step.reset()  # the running sums stay on the device: no host sync per step
        seen = 0
        hard_all = self.labels.hard  # labels trained on, for train_acc
        it = self.ds.train.batches(batches, a.workers)
        if not self.quiet:
            from tqdm import tqdm
            it = tqdm(it, total=len(batches), desc=f"stage {st.stage} epoch {epoch + 1}",
                      leave=False, dynamic_ncols=True)
        for x, idx in it:
            inputs = self.batch_inputs(st, x, idx, hard_all)
            if a.cuda_graphs and st.replay is None:
                # Captured on the first batch (every batch has its shape: the sampler pads the
                # last one); the capture's warm-up steps are undone, its sums dropped.
                st.replay = capture_step(st.step, *(t.clone() for t in inputs),
                                         state=st.step.state())
                st.step.reset()
            probs = (st.replay or st.step)(*inputs)
            st.sched.step()  # on the host: fills the lr tensor the next step reads
            seen += len(idx)
            if st.record:
                outputs.add(idx, probs.cpu())
        t = st.step.totals
        names = [n for n in t if n not in ("loss", "correct")]
        sums = all_reduce_sum([float(t["loss"]), float(t["correct"]), float(seen)] +
                              [float(t[n]) for n in names], self.info, self.device)
        res = {"train_loss": sums[0] / sums[2], "train_acc": sums[1] / sums[2]}
        res.update({n: v / sums[2] for n, v in zip(names, sums[3:])})
        return res, outputs

    @torch.no_grad()
    def evaluate(self, model) -> float:
        a, dev, info = self.args, self.device, self.info
        model.eval()
        test = self.ds.test
        mine = torch.arange(info.rank, len(test), info.world)  # no padding: exact counts
        bs = max(1, a.eval_batch_size)
        correct = 0.0
        y_all = test.targets
        for x, idx in test.batches([mine[i:i + bs] for i in range(0, len(mine), bs)], a.workers):
            x = self.ds.prepare(x, a.image_size, "none", dev)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                pred = model(x).argmax(1).cpu()
            correct += float((pred == y_all[idx]).sum())
        c, n = all_reduce_sum([correct, float(len(mine))], info, dev)
        return c / n

    def setup_stage(self, stage: int, resume: dict | None) -> Stage:
        """Model, EMA, optimizer (lr a device tensor), schedule, scaler, sampler and the step
        of stage `stage`, from `resume`'s state if given."""
        a, dev, info = self.args, self.device, self.info
        # Same seed on every rank: identical initial weights (DDP also broadcasts them).
        torch.manual_seed(a.seed + 1000 * (stage - 1))
        model = build_model(a, self.ds.num_classes, self.aux).to(dev)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        ema = build_ema(model, a.ema_decay)
        global_batch = a.batch_size
        lr = scaled_lr(a.lr, global_batch, a.lr_ref_batch)
        opt = build_optimizer(a.optimizer, model, lr, a.weight_decay, a.momentum,
                              a.rms_decay, a.rms_eps)
        sampler = GlobalBatchSampler(len(self.ds.train), global_batch, info.rank, info.world,
                                     seed=a.seed + 1000 * (stage - 1))
        sched = build_scheduler(opt, sampler.steps, a.lr_decay, a.lr_decay_epochs,
                                a.warmup_epochs)
        scaler = torch.amp.GradScaler(dev.type, enabled=self.amp_dtype == torch.float16)
        start = 0
        if resume is not None:
            model.load_state_dict(resume["model"])
            ema.load_state_dict(resume["ema"])
            opt.load_state_dict(resume["optimizer"])
            sched.load_state_dict(resume["scheduler"])
            scaler.load_state_dict(resume["scaler"])
            start = resume["epoch"]
            rng = resume["rng"]
            if len(rng) != info.world:
                raise ValueError(f"checkpoint was written by {len(rng)} processes, this run has "
                                 f"{info.world}: resume with the same number")
            ckpt_io.set_rng_state(rng[info.rank])
        else:
            # Per-rank stream for dropout and augmentation.
            torch.manual_seed(a.seed * 7919 + 1000 * stage + info.rank)
        fwd = ddp = None
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            fwd = ddp = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        fwd = fwd or model
        if a.compile:
            fwd = torch.compile(fwd)
        record = stage == 1 and a.joint_opt
        step = TrainStep(model, fwd, ema, opt, scaler, self.loss_fn(stage),
                         autocast=self.autocast, accum=a.accum_steps, aux_weight=a.aux_weight,
                         clip=a.clip_grad, record=record, ddp=ddp)
        return Stage(stage, model, ema, opt, sched, scaler, sampler, step, start, record)

    def run_stage(self, stage: int, epochs: int, resume: dict | None) -> str:
        """Train stage `stage` for `epochs` epochs (from `resume`'s state if given).
        Returns "done" or "stopped" (--stop-after)."""
        info, dev = self.info, self.device
        st = self.setup_stage(stage, resume)
        model, ema = st.model, st.ema
        for epoch in range(st.start, epochs):
            t0 = time.time()
            res, outputs = self.train_epoch(st, epoch)
            if st.record:
                gather = (lambda t: gather_cat(t, info, dev)) if info.enabled else None
                probs = outputs.assemble(len(self.ds.train), self.ds.num_classes, gather)
                self.labels.update(probs)
            train_s = time.time() - t0
            rec = {"stage": stage, "epoch": epoch + 1, "lr": current_lr(st.sched), **res,
                   "test_acc": self.evaluate(model), "ema_test_acc": self.evaluate(ema.module)}
            if self.args.noise != "none" or self.args.joint_opt:
                rec["label_acc"] = self.labels.accuracy()
                rec["noisy_label_acc"] = self.labels.noisy_accuracy()
            rec["epoch_s"] = time.time() - t0
            rec["train_s"] = train_s
            self.history.append(rec)
            self.log(self._line(rec, epochs))
            self.save(stage, epoch + 1, model, ema, st.opt, st.sched, st.scaler)
            self.epochs_ran += 1
            if self.args.stop_after and self.epochs_ran >= self.args.stop_after:
                self.final_model = (model, ema)
                return "stopped"
        self.final_model = (model, ema)
        return "done"

    def _line(self, r: dict, epochs: int) -> str:
        s = (f"stage {r['stage']} epoch {r['epoch']:3d}/{epochs}  loss {r['train_loss']:.4f}  "
             f"train {r['train_acc']:.4f}  test {r['test_acc']:.4f}  ema {r['ema_test_acc']:.4f}")
        if "label_acc" in r:
            s += f"  labels {r['label_acc']:.4f}"
        return s + f"  lr {r['lr']:.4g}  {r['epoch_s']:.1f}s"

    # ---- checkpoints and outputs ------------------------------------------------------------
    def save(self, stage, epoch, model, ema, opt, sched, scaler) -> None:
        rngs = gather_objects(ckpt_io.rng_state(), self.info)  # every rank's stream
        if not (self.out and self.info.is_main):
            return
        state = {"version": 1, "stage": stage, "epoch": epoch, "model": model.state_dict(),
                 "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                 "labels": self.labels.state_dict(), "history": self.history,
                 "flip_rate": self.flip_rate, "args": vars(self.args)}
        ckpt_io.atomic_save(state, os.path.join(self.out, CHECKPOINT))
        with open(os.path.join(self.out, "metrics.jsonl.tmp"), "w") as f:
            for r in self.history:
                f.write(json.dumps(r) + "\n")
        os.replace(os.path.join(self.out, "metrics.jsonl.tmp"),
                   os.path.join(self.out, "metrics.jsonl"))

    def finish(self, elapsed: float) -> dict:
        a = self.args
        last = self.history[-1]
        final = {"dataset": a.dataset, "model": a.model, "image_size": a.image_size,
                 "aux_logits": self.aux, "world_size": self.info.world,
                 "global_batch": a.batch_size, "epochs": a.epochs,
                 "test_acc": last["test_acc"], "ema_test_acc": last["ema_test_acc"],
                 "train_time_s": elapsed, "device": str(self.device)}
        if a.noise != "none" or a.joint_opt:
            final.update(noise=a.noise, noise_rate=a.noise_rate, noise_seed=a.noise_seed,
                         flip_rate=self.flip_rate, noisy_label_acc=self.labels.noisy_accuracy(),
                         label_recovery_acc=self.labels.accuracy(), joint_opt=a.joint_opt)
        s1 = [r for r in self.history if r["stage"] == 1]
        if a.joint_opt and s1:
            final.update(stage1_test_acc=s1[-1]["test_acc"],
                         stage1_ema_test_acc=s1[-1]["ema_test_acc"],
                         stage2_epochs=a.stage2_epochs, alpha=a.alpha, beta=a.beta,
                         begin=a.begin)
        if self.out and self.info.is_main:
            model, ema = self.final_model
            ckpt_io.atomic_save({"model": model.state_dict(), "ema": ema.module.state_dict()},
                                os.path.join(self.out, "model.pt"))
            with open(os.path.join(self.out, "final.json"), "w") as f:
                json.dump(final, f, indent=2)
            if a.noise != "none" or a.joint_opt:
                self.labels.save(self.out)
            try:
                from .plot import plot_metrics
                plot_metrics(self.history, os.path.join(self.out, "curves.png"))
            except ImportError as e:  # matplotlib is a dependency; say so if it is broken
                self.log(f"no plot: {e}")
        return final


def train(args, log=print) -> dict | None:
    """Run `inception-fast train` with parsed `args`; returns final.json's dict (None if stopped
    by --stop-after). Raises ValueError / FileNotFoundError for impossible settings."""
    t0 = time.time()
    run = Run(args, log)
    try:
        run.aux = args.aux_on
        resume = None
        if args.resume:
            if not args.out:
                raise ValueError("--resume needs --out (the folder holding checkpoint.pt)")
            resume = ckpt_io.load(os.path.join(args.out, CHECKPOINT))
            run.labels.load_state_dict(resume["labels"])
            run.history = list(resume["history"])
            t0 -= sum(r.get("epoch_s", 0.0) for r in run.history)
            run.log(f"resuming from {os.path.join(args.out, CHECKPOINT)}: stage {resume['stage']}, "
                f"{resume['epoch']} epoch(s) done")
        stages = [(1, args.epochs)]
        if args.joint_opt and args.stage2_epochs > 0:
            stages.append((2, args.stage2_epochs))
        for stage, epochs in stages:
            state = None
            if resume is not None:
                if resume["stage"] > stage:
                    continue
                if resume["stage"] == stage:
                    if resume["epoch"] >= epochs and stage < len(stages):
                        continue
                    state = resume
            if run.run_stage(stage, epochs, state) == "stopped":
                run.log(f"stopped after {args.stop_after} epoch(s) (--stop-after); continue with "
                    f"--resume --out {args.out}")
                barrier(run.info)
                return None
        final = run.finish(time.time() - t0)
        run.log(json.dumps({k: final[k] for k in final
                        if k in ("test_acc", "ema_test_acc", "label_recovery_acc",
                                 "noisy_label_acc", "train_time_s")}))
        barrier(run.info)
        return final
    finally:
        shutdown(run.info)


__all__ = ["train", "build_model", "Run"]
