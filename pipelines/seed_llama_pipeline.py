"""The base of the SEED-LLaMA pipeline tasks (`seed-text-to-image`, `seed-image-to-text` in `text_to_image.py`):
loading and checking the model and processor, the inputs of a call (one, a list, a generator or a dataset), chat
templates and seeded generation that does not depend on the batch or use the global random state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import Dataset as TorchDataset
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    GenerationConfig,
    LogitsProcessor,
    MinPLogitsWarper,
    Pipeline,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

try:  # a checkpoint's copy of this file (remote code): the modeling files sit beside it
    from .generation_seed_llama import SeedGeneratorSamplingLogitsProcessor
except ImportError:  # the seed-hf package
    from seed_hf.modeling.generation_seed_llama import SeedGeneratorSamplingLogitsProcessor

# Inference defaults of the SEED-LLaMA release: sampling with top_p 0.5, temperature 1.0, up to 512 new tokens.
RELEASE_GENERATION_CONFIG = GenerationConfig(do_sample=True, top_p=0.5, temperature=1.0, max_new_tokens=512)


class _SeedLlamaPipeline(Pipeline):
    """Shared loading, inputs, validation and seeded generation of the SEED-LLaMA pipelines."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True
    _default_generation_config = RELEASE_GENERATION_CONFIG
    # start of the error messages about inputs, naming what one input may be
    _input_kinds = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "model_type", None) != "seed_llama":
            raise ValueError(
                f"{type(self).__name__} needs a SEED-LLaMA model (model_type 'seed_llama'), got "
                f"{type(self.model).__name__} ({getattr(self.model.config, 'model_type', None)!r})"
            )
        if self.processor is None:
            raise ValueError(
                f"{type(self).__name__} needs the SeedLlamaProcessor saved with the model (processor=)"
            )
        # decoder-only generation over a padded batch: pad on the left so that every prompt ends at the same place
        self.tokenizer.padding_side = "left"

    def _single_input(self, value):
        """`value` as one input of the pipeline (what `preprocess` reads), or `None` when it is not one."""
        raise NotImplementedError

    def __call__(self, inputs, **kwargs):
        """Run the pipeline on one input, a list of inputs (a list of results), or a generator, iterable or
        `torch.utils.data.Dataset` of inputs such as `KeyDataset(dataset, column)` (an iterator of results)."""
        single = self._single_input(inputs)
        if single is not None:
            _check_generator_count(kwargs.get("generator"), 1)
            return super().__call__(_Item(single, 0), **kwargs)
        if isinstance(inputs, (list, tuple)):
            items = [self._single_input(value) for value in inputs]
            bad = [type(value).__name__ for value, item in zip(inputs, items, strict=True) if item is None]
            if bad or not items:
                raise ValueError(f"{self._input_kinds} or a non-empty list of them, got items of type {bad}")
            _check_generator_count(kwargs.get("generator"), len(items))
            return super().__call__([_Item(item, index) for index, item in enumerate(items)], **kwargs)
        if isinstance(inputs, TorchDataset) or (
            isinstance(inputs, Iterable) and not isinstance(inputs, (str, bytes, dict))
        ):
            return super().__call__(self._stream_items(inputs), **kwargs)
        raise ValueError(
            f"{self._input_kinds}, or a list, generator or dataset (e.g. KeyDataset) of them, got "
            f"{type(inputs).__name__}"
        )

    def _stream_items(self, inputs) -> Iterator[_Item]:
        # a map-style dataset (KeyDataset) is read by index, anything else by iteration; items are checked lazily
        values = (inputs[i] for i in range(len(inputs))) if isinstance(inputs, TorchDataset) else inputs
        for index, value in enumerate(values):
            item = self._single_input(value)
            if item is None:
                hint = (
                    " (for a datasets.Dataset, pass KeyDataset(dataset, column))"
                    if isinstance(value, dict)
                    else ""
                )
                raise ValueError(f"{self._input_kinds}; input {index} is a {type(value).__name__}{hint}")
            yield _Item(item, index)

    def _sanitize_common(
        self,
        seed: int | None,
        generator,
        chat_template: str | None,
        generate_kwargs: dict | None,
        max_new_tokens: int | None,
        extra: dict,
    ) -> tuple[dict, dict]:
        """The preprocess and forward parameters both tasks share."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int, got {type(seed).__name__}")
        if generator is not None:
            if seed is not None:
                raise ValueError("pass `seed` or `generator`, not both")
            generators = generator if isinstance(generator, list) else [generator]
            if not generators or not all(isinstance(g, torch.Generator) for g in generators):
                raise ValueError(
                    "`generator` must be a torch.Generator or a non-empty list of them (one per prompt), got "
                    f"{type(generator).__name__}"
                )
        generate_kwargs = dict(generate_kwargs or {})
        generate_kwargs.update(extra)
        if max_new_tokens is not None:
            generate_kwargs["max_new_tokens"] = max_new_tokens
        if generate_kwargs.get("num_return_sequences", 1) != 1:
            # one answer per input keeps outputs aligned with inputs; repeat an input to get more
            raise ValueError(
                f"`num_return_sequences` must be 1 (repeat the input for more answers), "
                f"got {generate_kwargs['num_return_sequences']}"
            )
        preprocess_params = {}
        if chat_template is not None:
            preprocess_params["chat_template"] = self.processor.check_chat_template(chat_template)
        forward_params = {"seed": seed, "generator": generator, "generate_kwargs": generate_kwargs}
        return preprocess_params, forward_params

    def _chat_inputs(self, messages: list[dict], chat_template: str | None) -> dict:
        return dict(
            self.processor.apply_chat_template(
                messages, chat_template=chat_template, tokenize=True, return_dict=True, return_tensors="pt"
            )
        )

    def _generate(
        self, model_inputs: dict, llm_seeds: list[int | None], generate_kwargs: dict, **overrides
    ) -> list[torch.Tensor]:
        """The new ids (one 1-D tensor per row) of `model.generate`. Rows with a seed are sampled one at a time,
        unpadded and under their own seed, so that a prompt's answer does not depend on the batch it is in; the
        global random state is left as it was."""
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs, **overrides)
        if llm_seeds[0] is None:
            prompt_length = model_inputs["input_ids"].shape[1]
            return list(self.model.generate(**model_inputs, **generate_kwargs)[:, prompt_length:])
        generate_kwargs, warpers = self._generator_sampling(generate_kwargs)
        caller_processors = list(generate_kwargs.pop("logits_processor", None) or [])
        new_ids = []
        for row_inputs, seed in zip(self._unpadded_rows(model_inputs), llm_seeds, strict=True):
            sampling = (
                []
                if warpers is None
                else [*warpers, SeedGeneratorSamplingLogitsProcessor(torch.Generator().manual_seed(seed))]
            )
            sequence = self.model.generate(
                **row_inputs, **generate_kwargs, logits_processor=[*caller_processors, *sampling]
            )
            new_ids.append(sequence[0, row_inputs["input_ids"].shape[1] :])
        return new_ids

    def _generator_sampling(self, generate_kwargs: dict) -> tuple[dict, list | None]:
        """
        `generate_kwargs` for sampling under a generator of the pipeline's own rather than the global random state,
        which every thread shares: the sampling becomes greedy decoding (`do_sample=False`) over scores warped as
        `generate` would warp them and perturbed by [`SeedGeneratorSamplingLogitsProcessor`] (the Gumbel-max trick:
        the same distribution). Returns the new kwargs and the warpers, or `None` when the call does not sample.
        """
        config, _ = self.model._prepare_generation_config(
            generate_kwargs.get("generation_config"),
            **{key: value for key, value in generate_kwargs.items() if key != "generation_config"},
        )
        if not config.do_sample:
            return generate_kwargs, None
        if config.num_beams > 1:
            raise ValueError(
                f"`seed`/`generator` cannot seed beam sampling (do_sample with num_beams={config.num_beams}); "
                "sample with num_beams=1, or search without do_sample"
            )
        warpers = _sampling_warpers(config, self.device)
        greedy = {"do_sample": False, **GREEDY_SAMPLING_PARAMETERS}
        user_config = generate_kwargs.get("generation_config")
        if user_config is None:
            return {**generate_kwargs, **greedy}, warpers
        user_config = copy.deepcopy(user_config)
        user_config.update(**greedy)
        return {**generate_kwargs, "generation_config": user_config}, warpers

    def _unpadded_rows(self, model_inputs: dict) -> list[dict]:
        """The rows of a left-padded batch as the inputs each prompt has on its own."""
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        config = self.model.config
        images_per_row = (input_ids == config.image_placeholder_id).sum(dim=1) // config.tokens_per_image
        pixel_values = model_inputs.get("pixel_values")
        pixel_rows = (
            torch.split(pixel_values, images_per_row.tolist())
            if pixel_values is not None
            else [None] * len(input_ids)
        )
        rows = []
        for row, (length, row_pixels) in enumerate(
            zip(attention_mask.sum(dim=1).tolist(), pixel_rows, strict=True)
        ):
            inputs = {
                "input_ids": input_ids[row : row + 1, -length:],
                "attention_mask": attention_mask[row : row + 1, -length:],
            }
            if row_pixels is not None and len(row_pixels):
                inputs["pixel_values"] = row_pixels
            rows.append(inputs)
        return rows


def _is_conversation(value) -> bool:
    # chat messages have a role; a list of other dicts (e.g. `{"image": ..., "question": ...}`) is a batch
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(item, dict) and "role" in item for item in value)
    )


class _Conversation:
    """One chat given to a pipeline: kept whole (a bare list would be taken for a batch)."""

    def __init__(self, messages: list[dict]):
        self.messages = messages


class _Item:
    """One input of a call and its position in the call (which selects its seed)."""

    def __init__(self, value, index: int):
        self.value, self.index = value, index


def _as_rows(value) -> list:
    # a batch's per-row values come as a list; a single input's (batch_size 1) as the value itself
    return value if isinstance(value, list) else [value]


def _check_generator_count(generator, num_inputs: int) -> None:
    if isinstance(generator, list) and len(generator) != num_inputs:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators but {num_inputs} inputs are given (one per input)"
        )


# transformers' defaults of the sampling parameters: greedy decoding leaves them unused and does not warn about them
GREEDY_SAMPLING_PARAMETERS = {
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "top_h": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}


def _sampling_warpers(config: GenerationConfig, device: torch.device) -> list[LogitsProcessor]:
    """The warpers `generate` applies, in its order, when it samples with `config` (one beam)."""
    warpers = []
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_h is not None:
        warpers.append(TopHLogitsWarper(top_h=config.top_h))
    if config.top_k:
        warpers.append(TopKLogitsWarper(top_k=config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=config.top_p))
    if config.min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=config.min_p))
    if config.typical_p is not None and config.typical_p < 1.0:
        warpers.append(TypicalLogitsWarper(mass=config.typical_p))
    if config.epsilon_cutoff is not None and 0.0 < config.epsilon_cutoff < 1.0:
        warpers.append(EpsilonLogitsWarper(epsilon=config.epsilon_cutoff))
    if config.eta_cutoff is not None and 0.0 < config.eta_cutoff < 1.0:
        warpers.append(EtaLogitsWarper(epsilon=config.eta_cutoff, device=device))
    return warpers


def _prompt_randomness(seed: int | None, generator, index: int) -> tuple[int | None, torch.Generator | None]:
    """The LLM sampling seed and the diffusion noise generator of input `index` of a call."""
    if seed is not None:
        return seed + index, torch.Generator().manual_seed(seed + index)
    if generator is None:
        return None, None
    if isinstance(generator, list):
        if index >= len(generator):
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators but input {index} needs one (one per input)"
            )
        generator = generator[index]
    return int(torch.randint(2**62, (), generator=generator)), generator
