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
import torch.nn.functional as F

from ..data import get_dataset
from ..losses import joint_optimization_loss, label_smoothing_cross_entropy
from ..models import get_model
from . import checkpoint as ckpt_io
from .distributed import (DistInfo, GlobalBatchSampler, all_reduce_sum, barrier,
                          check_global_batch, gather_cat, gather_objects, init_distributed,
                          shutdown)
from .ema import build_ema
from .joint_opt import EpochOutputs, LabelState
from .noisy_labels import make_noisy_labels
from .optim import build_optimizer
from .schedule import build_scheduler, scaled_lr

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


def _unpack(out):
    if isinstance(out, tuple):  # InceptionOutputs(logits, aux_logits) in training
        return out[0], out[1]
    return out, None


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
    def criterion(self, stage: int, logits: torch.Tensor, idx: torch.Tensor):
        a = self.args
        if stage == 1 and not a.joint_opt:
            y = self.labels.noisy[idx].to(logits.device)
            return label_smoothing_cross_entropy(logits, y, eps=a.label_smoothing,
                                                 backend=a.loss_backend,
                                                 check_values=False), {}
        soft = self.labels.soft[idx].to(logits.device)
        if stage == 1:
            return joint_optimization_loss(logits, soft, alpha=a.alpha, beta=a.beta,
                                           backend=a.loss_backend, check_values=False)
        # Stage 2: plain soft-label cross-entropy on the recovered labels (the authors'
        # second step); KL(soft || p) has the same gradient.
        return joint_optimization_loss(logits, soft, alpha=0.0, beta=0.0,
                                       backend=a.loss_backend, check_values=False)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_epoch(self, stage, epoch, model, fwd, ddp, ema, opt, sched, scaler, sampler,
                    record):
        a, dev = self.args, self.device
        model.train()
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        outputs = EpochOutputs() if record else None
        # Sums kept on the device: no host sync per step on a GPU.
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.float64, device=dev)
        seen = 0
        terms_sum: dict[str, torch.Tensor] = {}
        hard_all = self.labels.hard  # labels trained on, for train_acc
        it = self.ds.train.batches(batches, a.workers)
        if not self.quiet:
            from tqdm import tqdm
            it = tqdm(it, total=len(batches), desc=f"stage {stage} epoch {epoch + 1}",
                      leave=False, dynamic_ncols=True)
        for x, idx in it:
            opt.zero_grad(set_to_none=True)
            x = self.ds.prepare(x, a.image_size, self.augment, dev)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            probs_chunk = torch.empty(len(idx), self.ds.num_classes) if record else None
            A = a.accum_steps
            for k in range(A):
                # Micro-batch k takes every A-th sample: with A = world it is exactly the share
                # a rank would get, so 1 process x A micro-batches == A processes (BN included).
                xs, ids = x[k::A], idx[k::A]
                # DDP: all-reduce gradients only on the last micro-batch.
                sync = ddp is not None and k < A - 1
                with (ddp.no_sync() if sync else contextlib.nullcontext()), self.autocast():
                    logits, aux = _unpack(fwd(xs))
                    loss, terms = self.criterion(stage, logits, ids)
                    if aux is not None:
                        loss = loss + a.aux_weight * self.criterion(stage, aux, ids)[0]
                scaler.scale(loss / A).backward()
                with torch.no_grad():
                    if record:
                        probs_chunk[k::A] = F.softmax(logits.detach().float(), 1).cpu()
                    hard = hard_all[ids].to(logits.device)
                    correct += (logits.argmax(1) == hard).sum()
                    loss_sum += loss.detach().double() * len(ids)
                    for n, v in terms.items():
                        terms_sum[n] = terms_sum.get(n, 0.0) + v.double() * len(ids)
                seen += len(ids)
            scaler.unscale_(opt)
            if a.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip_grad)
            scaler.step(opt)
            scaler.update()
            sched.step()
            ema.update_parameters(model)
            if record:
                outputs.add(idx, probs_chunk)
        sums = all_reduce_sum([float(loss_sum), float(correct), float(seen)] +
                              [float(v) for v in terms_sum.values()], self.info, dev)
        res = {"train_loss": sums[0] / sums[2], "train_acc": sums[1] / sums[2]}
        res.update({n: v / sums[2] for n, v in zip(terms_sum, sums[3:])})
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

    def run_stage(self, stage: int, epochs: int, resume: dict | None) -> str:
        """Train stage `stage` for `epochs` epochs (from `resume`'s state if given).
        Returns "done" or "stopped" (--stop-after)."""
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
        for epoch in range(start, epochs):
            t0 = time.time()
            res, outputs = self.train_epoch(stage, epoch, model, fwd, ddp, ema, opt, sched,
                                            scaler, sampler, record)
            if record:
                gather = (lambda t: gather_cat(t, info, dev)) if info.enabled else None
                probs = outputs.assemble(len(self.ds.train), self.ds.num_classes, gather)
                self.labels.update(probs)
            train_s = time.time() - t0
            rec = {"stage": stage, "epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], **res,
                   "test_acc": self.evaluate(model), "ema_test_acc": self.evaluate(ema.module)}
            if a.noise != "none" or a.joint_opt:
                rec["label_acc"] = self.labels.accuracy()
                rec["noisy_label_acc"] = self.labels.noisy_accuracy()
            rec["epoch_s"] = time.time() - t0
            rec["train_s"] = train_s
            self.history.append(rec)
            self.log(self._line(rec, epochs))
            self.save(stage, epoch + 1, model, ema, opt, sched, scaler)
            self.epochs_ran += 1
            if a.stop_after and self.epochs_ran >= a.stop_after:
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
