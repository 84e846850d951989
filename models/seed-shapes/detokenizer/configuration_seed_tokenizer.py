"""Configuration of the SEED visual tokenizer (image -> 32 causal codes -> generation embedding)."""

from transformers import Blip2QFormerConfig, Blip2VisionConfig, PreTrainedConfig, ViTConfig

CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class SeedTokenizerConfig(PreTrainedConfig):
    r"""
    Configuration of [`SeedTokenizerModel`]. The defaults are the released SEED-2 tokenizer
    (`AILab-CVC/seed-tokenizer-2`): EVA ViT-g/14 at 224 px without its last block, a 12-layer causal
    Q-Former with 32 queries, an 8192 x 32 codebook, 4-block reconstruction and generation heads and a
    1024-d generation embedding (the unCLIP image-embedding size).

    Args:
        vision_config (`dict` or `Blip2VisionConfig`, *optional*):
            The vision tower (transformers' `Blip2VisionModel`). Its `layer_norm_eps` is the eps of the
            LayerNorms inside the ViT blocks.
        qformer_config (`dict` or `Blip2QFormerConfig`, *optional*):
            The causal Q-Former (transformers' `Blip2QFormerModel`). `encoder_hidden_size` is forced to the
            vision width.
        ln_vision_eps (`float`, *optional*, defaults to 1e-5):
            Eps of the LayerNorm after the ViT (`ln_vision` in the reference; it differs from the blocks' eps).
        num_query_tokens (`int`, *optional*, defaults to 32):
            Number of learned queries, i.e. codes per image.
        causal_query_attention (`bool`, *optional*, defaults to `True`):
            Mask the Q-Former's self-attention so that query i sees only queries 0..i (SEED's causal codes). `False`
            lets every query see every other (a bilateral Q-Former, as BLIP-2's): the SEED-LLaMA paper's ablation,
            whose codes an LLM completes far less often (`seed-hf ablate-shapes causal-vs-bilateral`).
        num_codes (`int`, *optional*, defaults to 8192):
            Codebook size.
        code_dim (`int`, *optional*, defaults to 32):
            Dimension of a codebook vector.
        code_groups (`list[list[int]]`, *optional*):
            A factorised code space (not in the paper): `[[num_positions, num_group_codes], ...]`, groups in query
            order. The positions of a group pick codes only from its own contiguous slice of the codebook (the
            first group from the first `num_group_codes` codes, and so on), so codes keep one id space. The
            positions must add up to `num_query_tokens` and the codes to `num_codes`. `None` (the release): every
            position picks from the whole codebook.
        decoder_config (`dict` or `ViTConfig`, *optional*):
            The pre-norm ViT blocks (transformers' `ViTLayer`) of the reconstruction and generation heads:
            `num_hidden_layers` blocks per head (4), `num_attention_heads` (12 in the reference, whatever the
            width), `intermediate_size` (4x the width unless given), `layer_norm_eps` (1e-6), biased q/k/v.
            `hidden_size` is forced to the Q-Former width.
        generation_head_widths (`list[int]`, *optional*, defaults to `[256, 128, 32]`):
            Output widths of the bias-free per-token MLP of the generation head (`image_down`); the last
            width times `num_query_tokens` is the input of the final projection.
        generation_embedding_dim (`int`, *optional*, defaults to 1024):
            Size of the generation embedding (the unCLIP image embedding it regresses).
        use_qformer_image (`bool`, *optional*, defaults to `False`):
            Read the generation embedding with a 1-query "reverse" Q-Former instead of the per-token MLP
            (the paper's variant; off in the release).
        reverse_qformer_config (`dict` or `Blip2QFormerConfig`, *optional*):
            The reverse Q-Former used when `use_qformer_image=True`; its `encoder_hidden_size` is forced to
            the Q-Former width. Defaults to a copy of `qformer_config`'s sizes.
        commitment_cost (`float`, *optional*, defaults to 0.25):
            Beta of the VQ commitment loss.
        image_mean (`list[float]`, *optional*), image_std (`list[float]`, *optional*):
            Normalisation the model expects (CLIP's); read by [`SeedImageProcessor`].
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal initialisation of new weights, also of the vision tower unless `vision_config`
            sets its own (BLIP-2's default there is 1e-10, which leaves a randomly initialised ViT blind).
    """

    model_type = "seed_tokenizer"
    sub_configs = {
        "vision_config": Blip2VisionConfig,
        "qformer_config": Blip2QFormerConfig,
        "reverse_qformer_config": Blip2QFormerConfig,
        "decoder_config": ViTConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    ln_vision_eps: float = 1e-5
    num_query_tokens: int = 32
    causal_query_attention: bool = True
    num_codes: int = 8192
    code_dim: int = 32
    code_groups: list[list[int]] | None = None
    decoder_config: dict | PreTrainedConfig | None = None
    generation_head_widths: list[int] | tuple[int, ...] = (256, 128, 32)
    generation_embedding_dim: int = 1024
    use_qformer_image: bool = False
    reverse_qformer_config: dict | PreTrainedConfig | None = None
    commitment_cost: float = 0.25
    image_mean: list[float] | tuple[float, ...] = CLIP_IMAGE_MEAN
    image_std: list[float] | tuple[float, ...] = CLIP_IMAGE_STD
    initializer_range: float = 0.02

    def to_dict(self):
        output = super().to_dict()
        # transformers' code saving takes any class named "*Tokenizer*" for a text tokenizer and records a
        # (slow, fast) pair of classes in `auto_map`; the SEED tokenizer is a model, so one class per entry
        if output.get("auto_map"):
            output["auto_map"] = {
                auto_class: reference[0] if isinstance(reference, (list, tuple)) else reference
                for auto_class, reference in output["auto_map"].items()
            }
        return output

    def __post_init__(self, **kwargs):
        if not isinstance(self.vision_config, PreTrainedConfig):
            # BLIP-2 initialises its ViT with std 1e-10 (it is always loaded pre-trained); a SEED tokenizer may
            # be trained from scratch, so an unspecified std is the model's `initializer_range`.
            self.vision_config = Blip2VisionConfig(
                **{"initializer_range": self.initializer_range, **(self.vision_config or {})}
            )
        if self.qformer_config is None:
            self.qformer_config = Blip2QFormerConfig()
        elif isinstance(self.qformer_config, dict):
            self.qformer_config = Blip2QFormerConfig(**self.qformer_config)
        self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        self.decoder_config = self._decoder_config(self.decoder_config, self.qformer_config.hidden_size)
        if self.use_qformer_image:
            if self.reverse_qformer_config is None:
                self.reverse_qformer_config = Blip2QFormerConfig(**self.qformer_config.to_dict())
            elif isinstance(self.reverse_qformer_config, dict):
                self.reverse_qformer_config = Blip2QFormerConfig(**self.reverse_qformer_config)
            self.reverse_qformer_config.encoder_hidden_size = self.qformer_config.hidden_size
        elif isinstance(self.reverse_qformer_config, dict):
            self.reverse_qformer_config = Blip2QFormerConfig(**self.reverse_qformer_config)
        if self.code_groups is not None:
            self.code_groups = [
                list(group) if isinstance(group, (list, tuple)) else group for group in self.code_groups
            ]
            sizes_ok = all(
                isinstance(group, list)
                and len(group) == 2
                and all(isinstance(size, int) and size > 0 for size in group)
                for group in self.code_groups
            )
            if not sizes_ok or (
                sum(group[0] for group in self.code_groups),
                sum(group[1] for group in self.code_groups),
            ) != (self.num_query_tokens, self.num_codes):
                raise ValueError(
                    "code_groups must be [[num_positions, num_group_codes], ...] of positive ints whose positions "
                    f"add up to num_query_tokens ({self.num_query_tokens}) and codes to num_codes "
                    f"({self.num_codes}), got {self.code_groups!r}"
                )
        self.generation_head_widths = list(self.generation_head_widths)
        self.image_mean = list(self.image_mean)
        self.image_std = list(self.image_std)
        super().__post_init__(**kwargs)

    @staticmethod
    def _decoder_config(decoder_config, width: int) -> ViTConfig:
        values = {"num_hidden_layers": 4, "num_attention_heads": 12, "layer_norm_eps": 1e-6, "qkv_bias": True}
        if isinstance(decoder_config, PreTrainedConfig):
            decoder_config = decoder_config.to_dict()
        values.update(decoder_config or {})
        values.setdefault("intermediate_size", 4 * width)
        values["hidden_size"] = width
        values["hidden_dropout_prob"] = values["attention_probs_dropout_prob"] = 0.0
        if width % values["num_attention_heads"]:
            raise ValueError(
                f"decoder_config.num_attention_heads ({values['num_attention_heads']}) must divide the Q-Former "
                f"width ({width})"
            )
        return ViTConfig(**values)

    @property
    def image_size(self) -> int:
        return self.vision_config.image_size

    @property
    def hidden_size(self) -> int:
        return self.qformer_config.hidden_size


# saved configs carry `auto_map` and this file, for `trust_remote_code=True` where seed-hf is not installed
SeedTokenizerConfig.register_for_auto_class()

__all__ = ["SeedTokenizerConfig", "CLIP_IMAGE_MEAN", "CLIP_IMAGE_STD"]
