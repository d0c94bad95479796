"""Hooks of SSDTrainer: evaluation with an early stop, data-stream progress in checkpoints,
and a check that every rank ends with the same weights."""
import hashlib
import logging
import math

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from detectron2.engine.hooks import EvalHook, PeriodicWriter
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter

from ..data.loader import find_resumable_sampler

logger = logging.getLogger(__name__)


def bbox_ap(results):
    """Box AP (Detectron2's percent) from DefaultTrainer.test results (one data set, or the
    first of several), or None."""
    if results and "bbox" not in results:  # {data set: its results}
        results = next(iter(results.values()))
    return (results or {}).get("bbox", {}).get("AP")


class EvalAndStopHook(EvalHook):
    """Detectron2's EvalHook (every ``eval_period`` iterations and after the last one), also
    after each iteration count in ``eval_iters`` (the MLPerf training reference's
    ``--evaluation``), with an early stop once box AP >= ``target_ap`` (a fraction, its
    ``--threshold``; 0 = off).

    Each evaluation with a target also records ``target_reached`` (0 or 1) in metrics.json.
    Reaching the target saves ``model_final`` and stops every rank; the checkpoints keep the
    iteration, so that ``--resume`` of a finished run does not train further.
    """

    def __init__(self, eval_period, eval_function, eval_iters=(), target_ap=0.0):
        def evaluate():
            self._results = eval_function()
            return self._results

        super().__init__(int(eval_period), evaluate)
        self._iters = {int(i) for i in eval_iters}
        self._target = float(target_ap)
        self._reached_iter = None  # iteration (0-based) after which the target was reached
        self._stopped_early = False

    def _do_eval(self):
        self._results = None
        super()._do_eval()  # evaluates, puts the results into the storage, synchronizes
        done = min(self.trainer.iter + 1, self.trainer.max_iter)  # after_step or after_train
        reached = False
        if self._results and self._target > 0:  # the main process: it alone has results
            ap = bbox_ap(self._results)
            reached = ap is not None and not math.isnan(ap) and ap / 100.0 >= self._target
            self.trainer.storage.put_scalar("target_reached", float(reached),
                                            smoothing_hint=False)
            logger.info(f"Evaluation after {done} iterations: box AP "
                        f"{'n/a' if ap is None else f'{ap / 100:.4f}'}, target "
                        f"{self._target:.4f}: {'reached' if reached else 'not reached'}.")
        if self._results:
            self._write_now()
        if self._target > 0 and comm.all_gather(reached)[0]:  # rank 0 decides for all
            self._reached_iter = done - 1
            over = done >= self.trainer.max_iter  # then the checkpointer saved model_final
            logger.info(f"Target AP {self._target} reached after {done} iterations"
                        + ("." if over else ": saving model_final and stopping."))
            if not over:
                self.trainer.checkpointer.save("model_final", iteration=done - 1)
                self._stopped_early = True
                self.trainer.request_stop()  # SSDTrainer's

    def _write_now(self):
        """Write metrics.json (and TensorBoard) now: writers keep each scalar's latest value
        only, and a second evaluation before the next periodic write would hide this one."""
        for h in self.trainer._hooks:
            for w in h._writers if isinstance(h, PeriodicWriter) else ():
                if not isinstance(w, CommonMetricPrinter):
                    w.write()

    def before_train(self):
        if self._target > 0 and self._reached_iter is not None:
            logger.info(f"The checkpoint reached the target AP {self._target} after "
                        f"{self._reached_iter + 1} iterations: not training further.")
            self._stopped_early = True
            self.trainer.request_stop()

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter in self._iters and next_iter != self.trainer.max_iter and not (
                self._period > 0 and next_iter % self._period == 0):
            self._do_eval()
        super().after_step()

    def after_train(self):
        self._eval_after_train &= not self._stopped_early  # not twice after an early stop
        super().after_train()

    def state_dict(self):
        return {} if self._reached_iter is None else {"target_reached_iter": self._reached_iter}

    def load_state_dict(self, state_dict):
        self._reached_iter = state_dict.get("target_reached_iter")


class DataProgressHook(HookBase):
    """Stores the images consumed (SOLVER.IMS_PER_BATCH a step) and the data-stream seed in
    every checkpoint, for the resumable sampler to continue after them on resume. Register
    it before the checkpointer, so that a checkpoint of iteration i counts step i."""

    def __init__(self, images_per_batch: int):
        self._images_per_batch = int(images_per_batch)
        self._consumed = 0

    def _sampler(self):
        trainer = getattr(self.trainer, "_trainer", self.trainer)
        return find_resumable_sampler(getattr(trainer, "data_loader", None))

    def after_step(self):
        self._consumed += self._images_per_batch

    def state_dict(self):
        sampler = self._sampler()
        return {} if sampler is None else {"images_consumed": self._consumed, "seed": sampler.seed}

    def load_state_dict(self, state_dict):
        sampler = self._sampler()
        if sampler is None or "images_consumed" not in state_dict:
            logger.warning("The data stream restarts from its beginning (no resumable "
                           "sampler, or a checkpoint without data progress).")
            return
        self._consumed = int(state_dict["images_consumed"])
        sampler.set_progress(state_dict["seed"], self._consumed)
        logger.info(f"Data stream (seed {sampler.seed}) resumes after {self._consumed} images.")


def _unwrap(model):
    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


def weights_digest(tensors) -> str:
    """SHA-256 (hex) of named tensors, ``dict`` or iterable of (name, tensor), in name order:
    equal digests mean bit-identical values."""
    h = hashlib.sha256()
    for name, t in sorted(dict(tensors).items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ReplicaCheckHook(HookBase):
    """After a finished training, logs digests of the model's parameters and of its other
    state-dict entries (buffers); with several processes, raises if the parameters differ
    across ranks, warns if the buffers do (per-rank BN statistics: rank 0's are saved)."""

    def __init__(self, model):
        self._model = model

    def after_train(self):
        trainer = self.trainer
        if trainer.iter < trainer.max_iter:  # failed training: other ranks may be gone
            return
        model = _unwrap(self._model)
        state = model.state_dict()  # what a checkpoint holds (no non-persistent buffers)
        names = {n for n, _ in model.named_parameters()}
        params = weights_digest({k: v for k, v in state.items() if k in names})
        buffers = weights_digest({k: v for k, v in state.items() if k not in names})
        rank, world = comm.get_rank(), comm.get_world_size()
        logger.info(f"Weights after {trainer.iter} iterations, rank {rank} of {world}: "
                    f"parameters sha256 {params}, buffers sha256 {buffers}")
        if world == 1:
            return
        gathered = comm.all_gather((params, buffers))
        bad = [r for r, (p, _) in enumerate(gathered) if p != gathered[0][0]]
        if bad:
            raise RuntimeError(f"Parameters differ across ranks after {trainer.iter} "
                               f"iterations: ranks {bad} differ from rank 0 (digests "
                               f"{[p for p, _ in gathered]}).")
        logger.info(f"Parameters identical on all {world} ranks.")
        bad = [r for r, (_, b) in enumerate(gathered) if b != gathered[0][1]]
        if bad:
            logger.warning(f"Buffers (e.g. BN running statistics) of ranks {bad} differ from "
                           "rank 0's, which are the ones saved. SyncBN / naiveSyncBN keep "
                           "them identical.")
