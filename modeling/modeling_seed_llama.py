"""SEED-LLaMA: LLaMA with the SEED image codes in its vocabulary, reading and drawing images with next-token
prediction.

`SeedLlamaForCausalLM` is `LlamaForCausalLM` plus three things:
- prompt images given as `pixel_values` become codes inside the model (Chameleon's pattern): the processor
  writes `<img>` + `tokens_per_image` `<image>` placeholders + `</img>`, the visual tokenizer (a
  `SeedTokenizerModel`, kept outside the LLM's weights) encodes the pixels and the codes' token ids replace the
  placeholders before the embedding lookup, in the prefill step only;
- `generate` keeps generated images well formed (`SeedImageConstraintLogitsProcessor`), can force the answer to
  start with an image and can apply classifier-free guidance to image codes only; in greedy search, while only image
  tokens can come next, the forward computes the logits of those ids only (a slice of the LM head);
- checks that fail loudly (`ValueError`) on placeholder/image count mismatches, out-of-range codes and prompts
  longer than the context.
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoModel, Cache, LlamaForCausalLM, LogitsProcessorList
from transformers.generation import GenerationMode
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, is_torchdynamo_compiling
from transformers.utils.deprecation import deprecate_kwarg

from .checkpoint_components import component_folder, hub_kwargs_of, readable_weights
from .configuration_seed_llama import SeedLlamaConfig
from .generation_seed_llama import (
    SeedImageConstraintLogitsProcessor,
    SeedImageGuidanceLogitsProcessor,
    SeedImageSpanTracker,
    SeedImageTokenLayout,
)


class _Detached:
    """Holds a module without registering it as a submodule, so the visual tokenizer stays out of the LLM's
    `state_dict()`, `parameters()`, `save_pretrained`, `Trainer` and peft."""

    def __init__(self, module: torch.nn.Module):
        self.module = module


class SeedLlamaForCausalLM(LlamaForCausalLM):
    r"""
    SEED-LLaMA ([`LlamaForCausalLM`] whose vocabulary holds the SEED image codes). See [`SeedLlamaConfig`] for
    the token layout.

    Extra inputs of `forward` (and `generate`):
        pixel_values (`torch.FloatTensor` of shape `(num_images, 3, size, size)`, *optional*):
            Prompt images, in the order of their placeholders in `input_ids` (row by row); encoded by the visual
            tokenizer.
        image_codes (`torch.LongTensor` of shape `(num_images, tokens_per_image)`, *optional*):
            Codes of the prompt images, instead of `pixel_values`.
        logits_vocab_range (`tuple[int, int]`, *optional*):
            `(start, end)`: compute the logits of the ids in `[start, end)` only, from the same rows of the LM head,
            and give every other id `-inf` (`generate` passes it while only image tokens can come next).

    Extra arguments of `generate`:
        constrain_images (`bool`, defaults to `True`): well-formed images only (see
            [`SeedImageConstraintLogitsProcessor`]).
        force_image (`bool`, defaults to `False`): the answer starts with `<img>` (image generation).
        image_guidance_scale (`float`, *optional*): classifier-free guidance on image codes
            ([`SeedImageGuidanceLogitsProcessor`]); off when `None` or 1.
        image_negative_prompt_ids (`torch.LongTensor`, *optional*), image_negative_prompt_attention_mask: the
            unconditional prompt of that guidance (default: the last prompt token).
    """

    config_class = SeedLlamaConfig
    config: SeedLlamaConfig

    def __init__(self, config: SeedLlamaConfig):
        super().__init__(config)
        self._visual_tokenizer: _Detached | None = None

    @property
    def image_token_layout(self) -> SeedImageTokenLayout:
        return SeedImageTokenLayout.from_config(self.config)

    # ----------------------------------------------------------------------------------------------------------
    # visual tokenizer (outside the LLM's weights)

    def set_visual_tokenizer(self, visual_tokenizer: torch.nn.Module | None) -> None:
        """Attach the SEED tokenizer used for `pixel_values` (anything with `encode(pixel_values) -> codes`), or
        detach it with `None`. It is not saved with the LLM: record where it lives in
        `config.visual_tokenizer_name_or_path` for `from_pretrained` to find it."""
        if visual_tokenizer is not None and not callable(getattr(visual_tokenizer, "encode", None)):
            raise TypeError(
                f"visual_tokenizer must have an encode(pixel_values) method, got {type(visual_tokenizer).__name__}"
            )
        self._visual_tokenizer = None if visual_tokenizer is None else _Detached(visual_tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        with readable_weights(pretrained_model_name_or_path):
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        # the components named in the config are fetched from the same place, revision and cache
        model.checkpoint_source = {
            "checkpoint": None
            if pretrained_model_name_or_path is None
            else str(pretrained_model_name_or_path),
            "subfolder": kwargs.get("subfolder"),
            "hub_kwargs": hub_kwargs_of(kwargs),
        }
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` records one Auto class; users load SEED-LLaMA with AutoModel too
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModel": f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def resolve_component(self, name_or_path: str) -> str:
        """A local folder for a component named in the config (`visual_tokenizer`, `detokenizer`): relative names
        resolve inside the checkpoint this model was loaded from (folder or Hub repo, same revision and cache)."""
        source = getattr(self, "checkpoint_source", None) or {"checkpoint": self.config.name_or_path}
        return component_folder(
            source["checkpoint"], name_or_path, source.get("subfolder"), source.get("hub_kwargs")
        )

    @property
    def visual_tokenizer(self) -> torch.nn.Module:
        """The SEED tokenizer, loaded on first use from `config.visual_tokenizer_name_or_path` in the model's dtype
        and on its device (`set_visual_tokenizer` attaches another one)."""
        if self._visual_tokenizer is None:
            name_or_path = self.config.visual_tokenizer_name_or_path
            if name_or_path is None:
                raise ValueError(
                    "pixel_values need a visual tokenizer: set config.visual_tokenizer_name_or_path or call "
                    "model.set_visual_tokenizer(seed_tokenizer_model), or pass image_codes instead"
                )
            visual_tokenizer = AutoModel.from_pretrained(
                self.resolve_component(name_or_path),
                dtype=self.dtype,
                # with seed-hf installed its registered class serves; otherwise this model is the checkpoint's
                # own code, trusted by the caller, and so is the tokenizer's code beside it
                trust_remote_code=not _seed_tokenizer_registered(),
            )
            self.set_visual_tokenizer(visual_tokenizer.to(self.device).eval())
        return self._visual_tokenizer.module

    @torch.no_grad()
    def get_image_codes(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Encode images into codes [num_images, tokens_per_image] with the visual tokenizer."""
        visual_tokenizer = self.visual_tokenizer
        reference = next(visual_tokenizer.parameters(), None)
        if reference is not None:
            pixel_values = pixel_values.to(device=reference.device, dtype=reference.dtype)
        codes = visual_tokenizer.encode(pixel_values)
        return self.image_token_layout.check_codes(codes, argument="the visual tokenizer's codes")

    def merge_image_codes(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        image_codes: torch.LongTensor | None = None,
    ) -> torch.LongTensor:
        """
        Return `input_ids` with every `<image>` placeholder replaced by the token id of its code, images taken
        in order (row by row). Raises `ValueError` when the placeholders and the images do not match.
        """
        layout = self.image_token_layout
        if pixel_values is not None and image_codes is not None:
            raise ValueError("pass either pixel_values or image_codes, not both")
        if (
            pixel_values is None
            and image_codes is None
            and (input_ids.shape[-1] == 1 or is_torchdynamo_compiling())
        ):
            # a decoding step (no device sync per generated token), or a traced graph (no data-dependent branch)
            return input_ids
        placeholders = input_ids == layout.image_placeholder_id
        if pixel_values is None and image_codes is None:
            num_placeholders = int(placeholders.sum())
            if num_placeholders:
                raise ValueError(
                    f"input_ids hold {num_placeholders} image placeholder tokens (id {layout.image_placeholder_id}) "
                    "but neither pixel_values nor image_codes was given"
                )
            return input_ids
        if pixel_values is not None:
            argument = "pixel_values"
            codes = self.get_image_codes(pixel_values)
        else:
            argument = "image_codes"
            codes = layout.check_codes(image_codes)
        # counting the placeholders reads a value: checked eagerly, left out of a traced graph
        num_placeholders = None if is_torchdynamo_compiling() else int(placeholders.sum())
        if num_placeholders is not None and num_placeholders != codes.numel():
            raise ValueError(
                f"input_ids hold {num_placeholders} image placeholder tokens, i.e. "
                f"{num_placeholders / layout.tokens_per_image:g} images of {layout.tokens_per_image} tokens, but "
                f"{argument} holds {codes.shape[0]} images"
            )
        token_ids = codes.to(input_ids.device) + layout.image_code_start_id
        return input_ids.masked_scatter(placeholders, token_ids)

    # ----------------------------------------------------------------------------------------------------------
    # forward / generate

    @property
    def context_length(self) -> int | None:
        """The last position the model was trained for, or `None` under scaled RoPE (whose point is to go past it)."""
        rope_type = (getattr(self.config, "rope_parameters", None) or {}).get("rope_type", "default")
        return self.config.max_position_embeddings if rope_type == "default" else None

    def _check_positions(self, sequence_length: int, position_ids, cache) -> None:
        # Counted in positions, not tokens: a padding-free packed row restarts its positions per sample. Checked on
        # multi-token forwards outside traced graphs (decoding steps are bounded by `generate`'s budget).
        limit = self.context_length
        if limit is None or sequence_length == 1 or is_torchdynamo_compiling():
            return
        if position_ids is not None:
            last = int(position_ids.max()) + 1
        else:
            last = (0 if cache is None else cache.get_seq_length()) + sequence_length
        if last > limit:
            raise ValueError(
                f"the inputs reach position {last}, past the context (max_position_embeddings={limit}); pass "
                "position_ids that restart per sample for packed rows"
            )

    def _check_token_ids(self, input_ids: torch.LongTensor) -> None:
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must be a tensor of integer token ids, got dtype {input_ids.dtype}")
        # an id past the embedding table is an IndexError deep in torch; the placeholder is the one id allowed there
        if input_ids.numel() == 0 or input_ids.shape[-1] == 1 or is_torchdynamo_compiling():
            return
        outside = (input_ids < 0) | (input_ids >= self.config.vocab_size)
        outside &= input_ids != self.config.image_placeholder_id
        if outside.any():
            raise ValueError(
                f"input_ids must be token ids in [0, {self.config.vocab_size}) (or the image placeholder "
                f"{self.config.image_placeholder_id}), got {input_ids[outside][:5].tolist()}"
            )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_codes: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        logits_vocab_range: tuple[int, int] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        if input_ids is None:
            if pixel_values is not None or image_codes is not None:
                raise ValueError("pixel_values and image_codes need input_ids with image placeholders")
        else:
            self._check_token_ids(input_ids)
            input_ids = self.merge_image_codes(input_ids, pixel_values=pixel_values, image_codes=image_codes)
        tokens = input_ids if input_ids is not None else inputs_embeds
        if tokens is not None:
            self._check_positions(tokens.shape[1], position_ids, cache)
        if logits_vocab_range is not None:
            if labels is not None:
                raise ValueError(
                    "logits_vocab_range leaves out logits the loss needs; pass labels without it"
                )
            outputs = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                inputs_embeds=inputs_embeds,
                use_cache=use_cache,
                **kwargs,
            )
            hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
            start, end = logits_vocab_range
            weight = self.lm_head.weight
            logits = hidden_states.new_full((*hidden_states.shape[:-1], weight.shape[0]), -float("inf"))
            # the same rows of the same weight: each logit is the same dot product as in the full head
            logits[..., start:end] = torch.nn.functional.linear(hidden_states, weight[start:end])
            return CausalLMOutputWithPast(
                logits=logits,
                cache=outputs.cache,
                hidden_states=outputs.hidden_states,
                attentions=outputs.attentions,
            )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor | None = None,
        image_codes: torch.LongTensor | None = None,
        is_first_iteration: bool = False,
        image_constraints: SeedImageConstraintLogitsProcessor | None = None,
        **kwargs,
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        # like pixel_values, the codes are merged in the prefill step only (later steps feed one new token)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["image_codes"] = image_codes
        if image_constraints is not None:
            model_inputs["logits_vocab_range"] = image_constraints.image_token_range(input_ids)
        return model_inputs

    def _max_new_tokens(self, prompt_positions: int, generation_config, kwargs: dict) -> int:
        """The number of new tokens `generate` may write, worked out as transformers does (call arguments, then
        `generation_config`, then the model's `generation_config.json`; 20 when nothing sets a length), never past
        the context."""
        sources = [
            kwargs,
            {} if generation_config is None else vars(generation_config),
            vars(self.generation_config),
        ]

        def first(name: str):
            return next((source[name] for source in sources if source.get(name) is not None), None)

        max_new_tokens, max_length = first("max_new_tokens"), first("max_length")
        for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if max_new_tokens is None:
            max_new_tokens = 20 if max_length is None else max_length - prompt_positions
        if self.context_length is not None:
            max_new_tokens = min(max_new_tokens, self.context_length - prompt_positions)
        return max_new_tokens

    def _prompt_tail_ids(self, inputs_embeds: torch.Tensor) -> torch.LongTensor:
        """
        The image-control ids at the end of an embeddings-only prompt, for the constraints to see an image the
        prompt opened: positions whose embedding is exactly `<img>`'s or `</img>`'s get those ids, others the
        (never matching) id -1. Only the last `tokens_per_image + 1` positions matter to an open image.
        """
        layout = self.image_token_layout
        window = inputs_embeds[:, -(layout.tokens_per_image + 1) :]
        embeddings = self.get_input_embeddings().weight
        tail = torch.full(window.shape[:2], -1, dtype=torch.long, device=window.device)
        for token_id in (layout.boi_token_id, layout.eoi_token_id):
            matches = (window == embeddings[token_id].to(window.dtype)).all(dim=-1)
            tail = tail.masked_fill(matches, token_id)
        return tail

    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config=None,
        logits_processor: LogitsProcessorList | None = None,
        *,
        constrain_images: bool = True,
        force_image: bool = False,
        image_guidance_scale: float | None = None,
        image_negative_prompt_ids: torch.LongTensor | None = None,
        image_negative_prompt_attention_mask: torch.LongTensor | None = None,
        **kwargs,
    ):
        prompt_ids = inputs if inputs is not None else kwargs.get("input_ids")
        prompt_embeds = kwargs.get("inputs_embeds")
        prompt_length = 0 if prompt_ids is None else prompt_ids.shape[-1]
        embeds_only = prompt_ids is None and prompt_embeds is not None
        prompt_positions = prompt_embeds.shape[1] if embeds_only else prompt_length
        if self.context_length is not None and prompt_positions >= self.context_length:
            raise ValueError(
                f"the prompt has {prompt_positions} tokens, which leaves no room in the context "
                f"(max_position_embeddings={self.context_length})"
            )
        if force_image and not constrain_images:
            raise ValueError("force_image needs constrain_images=True")
        suppressed = (
            kwargs.get("suppress_tokens") or getattr(generation_config, "suppress_tokens", None) or []
        )
        if force_image and self.config.boi_token_id in list(suppressed):
            raise ValueError("force_image starts the answer with <img>, which suppress_tokens forbids")
        layout = self.image_token_layout
        # one budget for transformers and the constraints, within the context
        max_new_tokens = self._max_new_tokens(prompt_positions, generation_config, kwargs)
        kwargs.pop("max_length", None)
        kwargs["max_new_tokens"] = max_new_tokens
        # the merged settings, to tell the generation mode as transformers will
        settings = copy.deepcopy(
            generation_config if generation_config is not None else self.generation_config
        )
        for name, value in kwargs.items():
            if value is not None and hasattr(settings, name):
                setattr(settings, name, value)
        mode = settings.get_generation_mode(kwargs.get("assistant_model"))
        tracker = SeedImageSpanTracker(
            layout,
            prompt_tail_ids=self._prompt_tail_ids(prompt_embeds) if embeds_only else None,
            # rows only grow in these modes; beam search and assisted decoding reorder or rewrite them
            incremental=mode in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE),
        )
        guided = image_guidance_scale is not None and image_guidance_scale != 1
        processors = LogitsProcessorList()
        if guided:
            use_cache = kwargs.get("use_cache", True)
            processors.append(
                SeedImageGuidanceLogitsProcessor(
                    image_guidance_scale,
                    self,
                    layout,
                    unconditional_ids=image_negative_prompt_ids,
                    unconditional_attention_mask=image_negative_prompt_attention_mask,
                    use_cache=use_cache,
                    tracker=tracker,
                )
            )
        if constrain_images:
            constraints = SeedImageConstraintLogitsProcessor(
                layout,
                prompt_length=prompt_length,
                max_length=prompt_length + max_new_tokens,
                force_image=force_image,
                tracker=tracker,
            )
            processors.append(constraints)
            # Only image-token logits are needed inside images: every other id gets -inf from the constraints before
            # any processor that reads the whole distribution. Not so for the processors transformers adds when
            # sampling (warpers before the constraints), for guidance (log-softmax of all logits), the raw logits
            # returned with output_logits, or a head that is not a plain linear layer (peft, quantized).
            if (
                mode == GenerationMode.GREEDY_SEARCH
                and not guided
                and not settings.output_logits
                and not settings.renormalize_logits
                and settings.guidance_scale in (None, 1)
                and settings.watermarking_config is None
                and type(self.lm_head) is torch.nn.Linear
            ):
                kwargs["image_constraints"] = constraints
        # the caller's processors come after: sampling ones (SeedGeneratorSamplingLogitsProcessor) must see the
        # guided, constrained scores
        processors.extend(logits_processor or [])
        return super().generate(
            inputs, generation_config=generation_config, logits_processor=processors, **kwargs
        )


def _seed_tokenizer_registered() -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return "seed_tokenizer" in CONFIG_MAPPING


# saved models carry `auto_map` and their code, for `trust_remote_code=True` where seed-hf is not installed
SeedLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["SeedLlamaForCausalLM"]
