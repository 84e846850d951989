"""A `Trainer` that logs the terms of a composite loss and codebook usage next to the total loss.

The model's `forward` returns the total `loss` plus named, detached scalar terms (e.g. `vq_loss`) and,
for a VQ model, the codes it picked. The Trainer still optimises `loss` alone; this subclass averages
the named terms over the steps since the last log and over all processes, and counts code usage in the
same window: `codebook_perplexity` (exp of the entropy of the code histogram; equals the number of codes
in use when they are used evenly) and `dead_codes` (codes not picked once in the window, all processes
together). Short windows see few codes, so dead-code counts are only meaningful with
`logging_steps * global batch * codes per image` well above the codebook size.
"""

import gc
import time

import torch
from accelerate import PartialState
from transformers import Trainer


class LossTermsTrainer(Trainer):
    """
    [`~transformers.Trainer`] that also logs `logged_terms` (scalar fields of the model output) and, when
    `codebook_size` is given, the usage of the codes in the output field `codes_field`. As in BLIP-2's
    training, scalar and vector parameters (temperature, biases, norms) get no weight decay.

    Args:
        logged_terms: names of the scalar output fields to log.
        codebook_size: number of codes, to log `codebook_perplexity` and `dead_codes`.
        codes_field: output field holding the code ids.
        **kwargs: the `Trainer`'s arguments.
    """

    def __init__(
        self,
        *args,
        logged_terms: tuple[str, ...] = (),
        codebook_size: int | None = None,
        codes_field: str = "image_codes",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.logged_terms = tuple(logged_terms)
        self.codebook_size = codebook_size
        self.codes_field = codes_field
        self._reset_window()

    def _reset_window(self) -> None:
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_count = 0
        self._code_counts: torch.Tensor | None = None

    def get_decay_parameter_names(self, model) -> list[str]:
        # as BLIP-2 / LAVIS: no weight decay on scalars and vectors (temperature, biases, norms)
        parameters = dict(model.named_parameters())
        return [name for name in super().get_decay_parameter_names(model) if parameters[name].ndim >= 2]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            self._record(outputs)
        return (loss, outputs) if return_outputs else loss

    def _record(self, outputs) -> None:
        for name in self.logged_terms:
            value = outputs[name].detach().float()
            self._term_sums[name] = self._term_sums.get(name, 0) + value
        self._term_count += 1
        if self.codebook_size is not None:
            counts = torch.bincount(
                outputs[self.codes_field].detach().flatten(), minlength=self.codebook_size
            )
            self._code_counts = counts if self._code_counts is None else self._code_counts + counts

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Training logs carry "loss"; every process reaches this point together (the Trainer gathers the
        # loss just before), so the collectives below are matched across processes.
        if "loss" in logs and self._term_count:
            count = torch.tensor(float(self._term_count), device=self.args.device)
            for name, total in self._term_sums.items():
                stacked = torch.stack([total.to(self.args.device), count])
                total_sum, count_sum = self.accelerator.reduce(stacked, reduction="sum")
                logs[name] = (total_sum / count_sum).item()
            if self._code_counts is not None:
                counts = self.accelerator.reduce(
                    self._code_counts.to(self.args.device), reduction="sum"
                ).float()
                probabilities = counts / counts.sum()
                entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
                logs["codebook_perplexity"] = entropy.exp().item()
                logs["dead_codes"] = int((counts == 0).sum().item())
            self._reset_window()
        super().log(logs, start_time)


__all__ = ["LossTermsTrainer"]


def close_process_group() -> None:
    """End a distributed run cleanly after training (no-op in a single process); drop the trainer first.

    Left to interpreter teardown, a gloo group can abort the process after a successful run ("terminate
    called without an active exception"): its destructor joins its worker threads while holding the GIL.
    So once the caller has dropped the trainer (and with it the DDP-wrapped model), collect it and let those
    threads drop their finished collectives (which hold Python tensors) with the GIL released, then destroy
    the group through accelerate's state, which the Trainer set up.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    gc.collect()
    time.sleep(0.5)
    PartialState().destroy_process_group()
