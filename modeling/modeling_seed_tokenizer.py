"""The SEED visual tokenizer: image -> 32 causal discrete codes -> generation embedding.

Built from transformers' BLIP-2 vision tower and Q-Former (with a causal mask over the queries) and
transformers' `ViTLayer` blocks for the reconstruction and generation heads.
"""

import json
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Blip2QFormerModel, Blip2VisionModel, PreTrainedModel, ViTConfig
from transformers.models.vit.modeling_vit import ViTLayer
from transformers.utils import ModelOutput

from .checkpoint_components import HUB_KWARGS, readable_weights
from .configuration_seed_tokenizer import SeedTokenizerConfig


@dataclass
class SeedTokenizerOutput(ModelOutput):
    """
    Outputs of [`SeedTokenizerModel.forward`].

    Args:
        image_codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)`):
            The discrete codes, in causal order.
        causal_embeddings (`torch.FloatTensor` of shape `(batch_size, num_query_tokens, hidden_size)`):
            The causal Q-Former's output for the learned queries (query i has seen queries <= i).
        image_embeds (`torch.FloatTensor` of shape `(batch_size, num_patches + 1, vision_hidden_size)`):
            The vision tower's output after its final LayerNorm (`ln_vision`).
        quantized_embeddings (`torch.FloatTensor` of shape `(batch_size, num_query_tokens, code_dim)`):
            The codebook vectors of `image_codes`.
        generation_embeddings (`torch.FloatTensor` of shape `(batch_size, generation_embedding_dim)`):
            The generation head's output for `image_codes` (the unCLIP image embedding it was trained to
            match); only computed when `return_generation_embeddings=True`.
    """

    image_codes: torch.LongTensor | None = None
    causal_embeddings: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    quantized_embeddings: torch.FloatTensor | None = None
    generation_embeddings: torch.FloatTensor | None = None


def _read_safetensors_checkpoint(name_or_path: str, **hub_kwargs) -> dict[str, torch.Tensor]:
    """All tensors of a `save_pretrained` checkpoint (a local folder or a Hub repo id), single-file or sharded, its
    files found as `from_pretrained` finds them. A truncated file is an `OSError` naming the checkpoint."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file
    from transformers.utils.hub import get_checkpoint_shard_files

    def find(filename):
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs)

    index = find(SAFE_WEIGHTS_INDEX_NAME)
    if index is not None:
        files, _ = get_checkpoint_shard_files(name_or_path, index, **hub_kwargs)
    elif (single := find(SAFE_WEIGHTS_NAME)) is not None:
        files = [single]
    else:
        raise FileNotFoundError(f"no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME} in {name_or_path}")
    tensors: dict[str, torch.Tensor] = {}
    with readable_weights(name_or_path):
        for file in files:
            tensors.update(load_file(file))
    return tensors


def _mlp(widths: list[int], bias: bool, activation: type[nn.Module]) -> nn.Sequential:
    """Linear layers of the given widths (input first) with `activation` between them."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if index:
            layers.append(activation())
        layers.append(nn.Linear(width_in, width_out, bias=bias))
    return nn.Sequential(*layers)


class SeedPositionalBlocks(PreTrainedModel):
    """A learned position embedding followed by pre-norm ViT blocks (the reference's `pos_embed` + `blocks`).

    A `PreTrainedModel` of its own so that `set_attn_implementation` finds the module of `decoder_config`.
    """

    config: ViTConfig
    config_class = ViTConfig
    base_model_prefix = "blocks"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ViTLayer"]

    def __init__(self, config: ViTConfig, num_positions: int):
        super().__init__(config)
        self.position_embedding = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))
        self.layers = nn.ModuleList([ViTLayer(config) for _ in range(config.num_hidden_layers)])
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            nn.init.trunc_normal_(module.position_embedding, std=self.config.initializer_range)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.position_embedding
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class SeedTokenizerPreTrainedModel(PreTrainedModel):
    config: SeedTokenizerConfig
    config_class = SeedTokenizerConfig
    base_model_prefix = "seed_tokenizer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # The causal query mask is a 4-D additive tensor: eager and SDPA honour it, flash/flex would not.
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _no_split_modules = ["Blip2EncoderLayer", "Blip2QFormerLayer", "ViTLayer", "Blip2VisionEmbeddings"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        with readable_weights(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        quantizer = getattr(self, "hf_quantizer", None)
        if quantizer is None or quantizer.quantization_config.quant_method != "torchao":
            return super().save_pretrained(save_directory, *args, **kwargs)
        # torchao's safetensors loader splits every name listed in the metadata at its last dot, which fails on
        # parameters of the root module (`query_tokens`). Plain tensors load without that metadata: leave them out.
        flatten = quantizer.get_state_dict_and_metadata

        def loadable(model):
            state_dict, metadata = flatten(model)
            names = json.loads(metadata["tensor_names"])
            for name in names:
                if "." not in name:
                    del metadata[name]
            metadata["tensor_names"] = json.dumps([name for name in names if "." in name])
            return state_dict, metadata

        quantizer.get_state_dict_and_metadata = loadable
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            del quantizer.get_state_dict_and_metadata

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, SeedTokenizerModel):
            nn.init.normal_(module.query_tokens, std=std)
            nn.init.uniform_(
                module.codebook.weight, -1.0 / module.config.num_codes, 1.0 / module.config.num_codes
            )
            if module.reverse_query_tokens is not None:
                nn.init.normal_(module.reverse_query_tokens, std=std)


class SeedTokenizerModel(SeedTokenizerPreTrainedModel):
    """
    The SEED tokenizer (released "SEED-2" variant).

    - `encode(pixel_values)` -> `image_codes` `[B, 32]` int64
    - `causal_embeddings(pixel_values)` -> `[B, 32, hidden_size]`
    - `decode(image_codes)` -> generation embeddings `[B, generation_embedding_dim]`, the input of the
      unCLIP de-tokenizer.
    - `reconstruct_causal_embeddings(image_codes)` -> `[B, 32, hidden_size]`, the stage-2 reconstruction path.

    `pixel_values` are normalised images of `config.image_size` pixels, as produced by
    [`SeedImageProcessor`].
    """

    # The codebook maps code ids to vectors: the "input embeddings" that `get_input_embeddings` returns and that
    # quantizers (e.g. `TorchAoConfig`) keep unquantized by default.
    _input_embed_layer = "codebook"

    def __init__(self, config: SeedTokenizerConfig):
        super().__init__(config)
        self.vision_model = Blip2VisionModel(config.vision_config)
        # The reference's `ln_vision` has its own eps; upstream gives `post_layernorm` the blocks' eps.
        self.vision_model.post_layernorm.eps = config.ln_vision_eps
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.hidden_size))
        self.qformer = Blip2QFormerModel(config.qformer_config)
        width = config.hidden_size
        self.encode_task_layer = nn.Sequential(
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, config.code_dim)
        )
        self.codebook = nn.Embedding(config.num_codes, config.code_dim)
        self.decode_task_layer = nn.Sequential(
            nn.Linear(config.code_dim, config.code_dim), nn.Tanh(), nn.Linear(config.code_dim, width)
        )
        self.reconstruction_blocks = SeedPositionalBlocks(config.decoder_config, config.num_query_tokens)
        self.generation_blocks = SeedPositionalBlocks(config.decoder_config, config.num_query_tokens)
        if config.use_qformer_image:
            self.reverse_query_tokens = nn.Parameter(torch.zeros(1, 1, width))
            self.reverse_qformer = Blip2QFormerModel(config.reverse_qformer_config)
            self.generation_head = None
            self.generation_projection = nn.Linear(width, config.generation_embedding_dim)
        else:
            self.reverse_query_tokens = None
            self.reverse_qformer = None
            self.generation_head = _mlp(
                [width, *config.generation_head_widths], bias=False, activation=nn.ReLU
            )
            self.generation_projection = nn.Linear(
                config.num_query_tokens * config.generation_head_widths[-1], config.generation_embedding_dim
            )
        self.post_init()

    @classmethod
    def from_blip2(cls, blip2_path: str | os.PathLike, **kwargs) -> "SeedTokenizerModel":
        """Start a SEED tokenizer from a transformers BLIP-2 checkpoint (the paper's starting point): a local folder
        or a Hub repo id, fetched with the `revision`, `cache_dir`, `token` and `local_files_only` given in `kwargs`.

        The vision tower, Q-Former and learned queries are copied from the BLIP-2 weights (any BLIP-2 head:
        `Blip2Model`, `Blip2ForConditionalGeneration`, `Blip2ForImageTextRetrieval`; the Q-Former's text
        parts and the language model are left out); the codebook and heads are freshly initialised. The other
        `kwargs` override [`SeedTokenizerConfig`] fields (e.g. `num_codes`).
        """
        from transformers import Blip2Config

        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        blip2_path = os.fspath(blip2_path)
        config_dict, _ = Blip2Config.get_config_dict(blip2_path, **hub_kwargs)
        model_type = config_dict.get("model_type")
        if model_type != Blip2Config.model_type:
            raise ValueError(
                f"blip2_path must be a BLIP-2 checkpoint folder, got model_type {model_type!r} in {blip2_path}"
            )
        blip2_config = Blip2Config.from_dict(config_dict)
        qformer_config = blip2_config.qformer_config.to_dict()
        qformer_config["use_qformer_text_input"] = False
        config = SeedTokenizerConfig(
            vision_config=blip2_config.vision_config.to_dict(),
            qformer_config=qformer_config,
            num_query_tokens=blip2_config.num_query_tokens,
            **kwargs,
        )
        model = cls(config)
        wanted = {
            key: value
            for key, value in model.state_dict().items()
            if key.startswith(("vision_model.", "qformer.")) or key == "query_tokens"
        }
        found = {
            key: tensor
            for key, tensor in _read_safetensors_checkpoint(blip2_path, **hub_kwargs).items()
            if key in wanted
        }
        missing = sorted(set(wanted) - set(found))
        mismatched = sorted(key for key in found if found[key].shape != wanted[key].shape)
        if missing or mismatched:
            raise ValueError(
                f"blip2_path {blip2_path} does not hold a compatible BLIP-2 vision tower and Q-Former: "
                f"missing {missing}, mis-shaped {mismatched}"
            )
        model.load_state_dict(found, strict=False)
        return model

    # ------------------------------------------------------------------ input checks
    def _check_pixel_values(self, pixel_values) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        size = self.config.image_size
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must have shape (batch, 3, {size}, {size}), got {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[0] == 0:
            raise ValueError("pixel_values is an empty batch")
        if pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must have 3 channels, got {pixel_values.shape[1]}")
        if tuple(pixel_values.shape[2:]) != (size, size):
            raise ValueError(
                f"pixel_values must be {size}x{size} images, got {pixel_values.shape[2]}x{pixel_values.shape[3]}"
            )
        if not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}")
        if not torch.isfinite(pixel_values).all():
            # NaN/inf would still give codes (argmin over NaN distances), silently wrong ones
            raise ValueError("pixel_values must be finite, got NaN or infinite values")
        return pixel_values

    def _check_image_codes(self, image_codes) -> torch.Tensor:
        if not isinstance(image_codes, torch.Tensor):
            raise TypeError(f"image_codes must be a torch.Tensor, got {type(image_codes).__name__}")
        expected = self.config.num_query_tokens
        if image_codes.ndim != 2 or image_codes.shape[1] != expected:
            raise ValueError(
                f"image_codes must have shape (batch, {expected}), got {tuple(image_codes.shape)}"
            )
        if image_codes.shape[0] == 0:
            raise ValueError("image_codes is an empty batch")
        if image_codes.is_floating_point() or image_codes.is_complex() or image_codes.dtype == torch.bool:
            raise TypeError(f"image_codes must be an integer tensor, got {image_codes.dtype}")
        low, high = int(image_codes.min()), int(image_codes.max())
        if low < 0 or high >= self.config.num_codes:
            raise ValueError(
                f"image_codes must lie in [0, {self.config.num_codes}), got values in [{low}, {high}]"
            )
        return image_codes.long()

    # ------------------------------------------------------------------ encoder side
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower's output after `ln_vision`: `[B, 1 + num_patches, vision_hidden_size]`."""
        pixel_values = self._check_pixel_values(pixel_values)
        return self.vision_model(pixel_values=pixel_values).last_hidden_state

    def causal_embeddings_from_image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """The causal Q-Former on precomputed `image_features` (e.g. a frozen ViT run without gradients); a bilateral
        one (no mask over the queries) when `config.causal_query_attention` is `False`."""
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        mask = None
        if self.config.causal_query_attention:
            dtype, size = self.qformer.layernorm.weight.dtype, self.config.num_query_tokens
            # Query i may attend to queries 0..i. Additive mask: the eager backend adds it to the scores, SDPA
            # takes a float mask as a bias. (Built per call: a non-persistent buffer is not restored by
            # from_pretrained's meta-device loading.)
            mask = torch.full((size, size), torch.finfo(dtype).min, dtype=dtype, device=image_embeds.device)
            mask = mask.triu(diagonal=1)[None, None]
        return self.qformer(
            query_embeds=queries, attention_mask=mask, encoder_hidden_states=image_embeds
        ).last_hidden_state

    def causal_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The causal Q-Former's output for the learned queries: `[B, num_query_tokens, hidden_size]`."""
        return self.causal_embeddings_from_image_features(self.image_features(pixel_values))

    def quantize(self, causal_embeddings: torch.Tensor) -> tuple[torch.LongTensor, torch.Tensor]:
        """Project causal embeddings to code space and pick the nearest codebook entry (of the position's own slice
        when `config.code_groups` factorises the code space).

        Returns `(image_codes [B, N], code_space_embeddings [B, N, code_dim])`; the second are the continuous
        vectors before quantisation (what the VQ losses compare with the codebook).
        """
        code_space = self.encode_task_layer(causal_embeddings)
        # Distances in float32 whatever the compute dtype, so that bf16 rounding flips as few codes as possible.
        flat = code_space.reshape(-1, self.config.code_dim).float()
        codebook = self.codebook.weight.float()
        distances = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
        distances = distances.view(*code_space.shape[:-1], -1)
        allowed = self.allowed_codes()
        if allowed is not None:
            distances = distances.masked_fill(~allowed.to(distances.device), float("inf"))
        return distances.argmin(dim=-1), code_space

    def allowed_codes(self) -> torch.BoolTensor | None:
        """`[num_query_tokens, num_codes]`: the codes each query position may take under `config.code_groups`
        (`None` without groups: every code)."""
        if self.config.code_groups is None:
            return None
        allowed = torch.zeros(self.config.num_query_tokens, self.config.num_codes, dtype=torch.bool)
        position = code = 0
        for num_positions, num_group_codes in self.config.code_groups:
            allowed[position : position + num_positions, code : code + num_group_codes] = True
            position, code = position + num_positions, code + num_group_codes
        return allowed

    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Images -> `image_codes` `[B, num_query_tokens]` (int64, causal order)."""
        return self.quantize(self.causal_embeddings(pixel_values))[0]

    # ------------------------------------------------------------------ decoder side
    def upsample_codes(self, image_codes: torch.Tensor) -> torch.Tensor:
        """Codebook lookup + `decode_task_layer`: `[B, N]` codes -> `[B, N, hidden_size]`."""
        return self.decode_task_layer(self.codebook(image_codes))

    def reconstruct_causal_embeddings(self, image_codes: torch.Tensor) -> torch.Tensor:
        """The training-only reconstruction path: codes -> estimate of the causal embeddings."""
        return self.reconstruction_blocks(self.upsample_codes(self._check_image_codes(image_codes)))

    def generation_embeddings_from_upsampled(self, upsampled: torch.Tensor) -> torch.Tensor:
        """The generation head on `decode_task_layer` outputs `[B, N, hidden_size]` -> `[B, generation_dim]`."""
        hidden_states = self.generation_blocks(upsampled)
        if self.reverse_qformer is not None:
            queries = self.reverse_query_tokens.expand(hidden_states.shape[0], -1, -1)
            pooled = self.reverse_qformer(query_embeds=queries, encoder_hidden_states=hidden_states)
            return self.generation_projection(pooled.last_hidden_state[:, 0])
        return self.generation_projection(self.generation_head(hidden_states).flatten(1))

    def decode(self, image_codes: torch.Tensor) -> torch.Tensor:
        """`image_codes` `[B, num_query_tokens]` -> generation embeddings `[B, generation_embedding_dim]`."""
        return self.generation_embeddings_from_upsampled(
            self.upsample_codes(self._check_image_codes(image_codes))
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        return_generation_embeddings: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SeedTokenizerOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            Normalised images (see [`SeedImageProcessor`]).
        return_generation_embeddings (`bool`, *optional*, defaults to `False`):
            Also run the generation head on the codes.
        """
        image_embeds = self.image_features(pixel_values)
        causal_embeddings = self.causal_embeddings_from_image_features(image_embeds)
        image_codes, _ = self.quantize(causal_embeddings)
        generation_embeddings = None
        if return_generation_embeddings:
            generation_embeddings = self.generation_embeddings_from_upsampled(
                self.upsample_codes(image_codes)
            )
        output = SeedTokenizerOutput(
            image_codes=image_codes,
            causal_embeddings=causal_embeddings,
            image_embeds=image_embeds,
            quantized_embeddings=self.codebook(image_codes),
            generation_embeddings=generation_embeddings,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


# saved models carry `auto_map` and their code, for `trust_remote_code=True` where seed-hf is not installed
SeedTokenizerModel.register_for_auto_class("AutoModel")

__all__ = ["SeedTokenizerModel", "SeedTokenizerOutput", "SeedTokenizerPreTrainedModel"]
