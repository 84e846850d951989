"""Training models of the two SEED tokenizer stages; each returns its loss from `forward` for the `Trainer`.

- Stage 1, [`SeedTokenizerForImageTextContrastive`]: the causal Q-Former learns image-text contrast (ITC)
  between the **last** causal query (which has seen all the others), projected to 256-d, and the caption's
  [CLS] embedding from the Q-Former's text side, projected to 256-d, with a learnable temperature.
- Stage 2, [`SeedTokenizerForCodebookTraining`]: with the ViT and Q-Former frozen, the codebook, the task
  layers and the reconstruction and generation heads learn
  `loss = 5 * vq + 2 * (1 - cos(reconstruction, causal embeddings)) + 0.5 * MSE(generation embedding, teacher)`.

Both hold a whole [`SeedTokenizerModel`] as `seed_tokenizer`, so that the trained tokenizer is exported with
`export_tokenizer()` and loads as a plain `SeedTokenizerModel`.
"""

import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings
from transformers.utils import ModelOutput

from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel, SeedTokenizerPreTrainedModel

# SeedTokenizerModel parts that only stage 2 trains (the decoder side of the tokenizer).
_DECODER_SIDE = (
    "encode_task_layer",
    "codebook",
    "decode_task_layer",
    "reconstruction_blocks",
    "generation_blocks",
    "generation_head",
    "generation_projection",
    "reverse_query_tokens",
    "reverse_qformer",
)
# ... and those of the encoder side, which stage 1 trains (all but the vision tower unless asked).
_ENCODER_SIDE = ("vision_model", "query_tokens", "qformer")


# kept: `torch.distributed.nn.functional.all_gather` does this but is deprecated (FutureWarning) for a private
# module's function, and its gloo backward scatters in world-size rounds where one all_reduce does
class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each process the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch_size = tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        # Every process's loss depends on every slice: sum their gradients (all_reduce works on every
        # backend, unlike reduce_scatter), then keep this process's slice.
        summed = grad_output.contiguous().clone()  # all_reduce works in place; leave autograd's tensor alone
        dist.all_reduce(summed)
        start = dist.get_rank() * ctx.batch_size
        return summed[start : start + ctx.batch_size]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _freeze(model: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        part = getattr(model, name, None)  # a module or a parameter; absent variants are None
        if part is not None:
            part.requires_grad_(False)


def _check_attribute_labels(config, attribute_labels) -> None:
    if config.attribute_loss_weight > 0 and attribute_labels is None:
        raise ValueError("attribute_labels are required when config.attribute_loss_weight is positive")


def query_attribute_groups(num_positions: int, num_attributes: int) -> torch.LongTensor:
    """`[num_positions]`: the attribute whose group each query position belongs to in the attribute term,
    contiguous groups in attribute order (32 positions, 6 attributes: 6, 5, 5, 6, 5, 5 positions)."""
    return torch.arange(num_positions) * num_attributes // num_positions


def attribute_group_loss(
    vectors: torch.Tensor, attribute_labels: torch.LongTensor, include_last: bool = True
) -> torch.Tensor:
    """
    The attribute term of both tokenizer stages: the query positions of `vectors` `[B, N, D]` (causal embeddings or
    code-space projections) are split into as many contiguous groups as `attribute_labels` `[B, A]` has columns,
    group `g` for attribute `g`. At each position of group `g`, the batch's variance of its vector within the
    images that share the value of attribute `g` is set against the squared distance between the mean vectors of
    every two values in the batch: the mean of `within / (within + distance**2)` over value pairs, in [0, 1], near 0
    only when the position tells every two values apart far beyond its spread within a value. The mean over a
    group's positions, then over groups. Labels only need to be equal for equal values. `include_last=False` leaves
    the last position out (stage 1, where it is the image-text embedding).

    Pairs, not the share of the total scatter: a share is small as soon as one value lies far from the others,
    and tokenizers trained on it left other values' mean vectors nearly equal (`docs/shapes-composition-findings.md`
    section 6).
    """
    batch, positions = vectors.shape[:2]
    num_attributes = attribute_labels.shape[1]
    if attribute_labels.shape[0] != batch or not 0 < num_attributes < positions:
        raise ValueError(
            f"attribute_labels must have shape (batch_size={batch}, num_attributes) with 1 to {positions - 1} "
            f"attributes, got {tuple(attribute_labels.shape)}"
        )
    groups = query_attribute_groups(positions, num_attributes).to(vectors.device)
    if not include_last:
        groups[-1] = -1
    terms = []
    for attribute in range(num_attributes):
        group = vectors[:, groups == attribute].float()  # [B, P, D]
        _, classes = attribute_labels[:, attribute].unique(return_inverse=True)
        membership = F.one_hot(classes).float()
        class_means = torch.einsum("bk,bpd->kpd", membership, group) / membership.sum(0)[:, None, None]
        pairs = torch.triu_indices(len(class_means), len(class_means), offset=1, device=group.device)
        if pairs.shape[1] == 0:  # a batch with one value of the attribute separates nothing
            continue
        within = (group - class_means[classes]).pow(2).sum(-1).mean(0)  # [P]
        pair_distances = (class_means[pairs[0]] - class_means[pairs[1]]).pow(2).sum(-1)  # [pairs, P]
        terms.append((within / (within + pair_distances).clamp_min(1e-8)).mean())
    if not terms:
        return vectors.new_zeros(())
    return torch.stack(terms).mean()


def _tokenizer_config_values(config: SeedTokenizerConfig) -> dict:
    """The `SeedTokenizerConfig` values of `config`, without a stage config's own training fields."""
    values = config.to_dict()
    own_fields = () if type(config) is SeedTokenizerConfig else tuple(type(config).__annotations__)
    for name in (*own_fields, "model_type", "architectures"):
        values.pop(name, None)
    return values


# the text feed-forward layers of a Q-Former layer (the queries' own are `intermediate_query`/`output_query`)
_QFORMER_TEXT_SIDE = re.compile(r"\.layer\.\d+\.(intermediate|output)\.")


def _is_qformer_text_side(key: str) -> bool:
    return _QFORMER_TEXT_SIDE.search(key) is not None


class _SeedTokenizerStageModel(SeedTokenizerPreTrainedModel):
    """
    Common ground of the stage models: a whole [`SeedTokenizerModel`] as `seed_tokenizer`, loaded from and
    exported to a plain tokenizer, whose frozen parts stay in eval mode in `train()` (no dropout in targets).
    """

    def _frozen_parts(self) -> tuple[str, ...]:
        raise NotImplementedError

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen_parts():
            part = getattr(self.seed_tokenizer, name, None)
            if isinstance(part, nn.Module):
                part.eval()
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def set_teacher(self, teacher: nn.Module) -> None:
        """Attach a (frozen, unsaved) teacher vision model."""
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher.eval().requires_grad_(False)
        self._keys_to_ignore_on_save = set(self._keys_to_ignore_on_save or ()) | {
            f"teacher.{key}" for key in teacher.state_dict()
        }

    def _teacher_image_embeds(self, pixel_values, teacher_pixel_values, teacher_image_embeds) -> torch.Tensor:
        if teacher_image_embeds is not None:
            return teacher_image_embeds
        if self.teacher is None:
            raise ValueError(
                f"{type(self).__name__} needs a teacher image embedding: pass teacher_image_embeds or attach a "
                "teacher model"
            )
        with torch.no_grad():
            output = self.teacher(
                pixel_values=pixel_values if teacher_pixel_values is None else teacher_pixel_values
            )
        if not hasattr(output, "image_embeds"):
            raise TypeError(
                f"the teacher must return `image_embeds` (a vision model with projection), got {type(output).__name__}"
            )
        return output.image_embeds

    def _load_tokenizer_weights(self, tokenizer: SeedTokenizerModel) -> None:
        missing, unexpected = self.seed_tokenizer.load_state_dict(tokenizer.state_dict(), strict=False)
        # only the Q-Former's text side may be new (stage 1 adds it to a plain tokenizer)
        if unexpected or not all(_is_qformer_text_side(key) for key in missing):
            raise ValueError(
                f"tokenizer weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    def export_tokenizer(self, state_dict: dict[str, torch.Tensor] | None = None) -> SeedTokenizerModel:
        """
        The trained tokenizer as a plain [`SeedTokenizerModel`] (without the Q-Former's text side).

        Args:
            state_dict: this model's full state dict when its own parameters are sharded (FSDP, ZeRO-3),
                as `Accelerator.get_state_dict` gathers it.
        """
        values = _tokenizer_config_values(self.config)
        values["qformer_config"]["use_qformer_text_input"] = False
        tokenizer = SeedTokenizerModel(SeedTokenizerConfig(**values))
        expected = tokenizer.state_dict().keys()
        if state_dict is None:
            state = self.seed_tokenizer.state_dict()
        else:
            prefix = "seed_tokenizer."
            state = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
        if extra := [key for key in state if key not in expected and not _is_qformer_text_side(key)]:
            raise RuntimeError(f"unexpected parameters outside the Q-Former's text side: {extra[:5]}")
        tokenizer.load_state_dict({key: value for key, value in state.items() if key in expected})
        return tokenizer


# ---------------------------------------------------------------------------------------------- stage 1
class SeedTokenizerContrastiveConfig(SeedTokenizerConfig):
    r"""
    Configuration of [`SeedTokenizerForImageTextContrastive`] (tokenizer stage 1): a [`SeedTokenizerConfig`]
    plus the contrastive head. The Q-Former gets its text side (`use_qformer_text_input=True`: word and
    position embeddings, text feed-forward layers); its `vocab_size` and `max_position_embeddings` size the
    text embeddings, and must match the text tokenizer (BERT's, 30522 + BLIP-2's added `[DEC]`, in BLIP-2).

    Args:
        image_text_hidden_size (`int`, *optional*, defaults to 256):
            Dimension of the shared image-text embedding space.
        initial_temperature (`float`, *optional*, defaults to 0.07):
            Initial value of the learnable softmax temperature.
        temperature_range (`list[float]`, *optional*, defaults to `[0.001, 0.5]`):
            The temperature is clamped to this range in the loss.
        label_smoothing (`float`, *optional*, defaults to 0.1):
            Label smoothing of the contrastive cross-entropies (BLIP-2's value).
        freeze_vision_model (`bool`, *optional*, defaults to `True`):
            Keep the vision tower (and its final LayerNorm, `ln_vision`) fixed, as in the paper.
        teacher_distillation_weight (`float`, *optional*, defaults to 0.0):
            Weight of an extra term (not in the paper), `1 - cos` between a linear head on the last causal query
            and a teacher's image embedding (`generation_embedding_dim` wide; see `set_teacher`). The paper's
            Q-Former starts from BLIP-2; one trained from scratch by image-text contrast alone can ignore where
            things are (on SEED-Shapes its causal embeddings did not tell positions apart), which this dense
            target prevents.
        attribute_loss_weight (`float`, *optional*, defaults to 0.0):
            When positive (not in the paper), weight of [`attribute_group_loss`] on the causal embeddings of all
            queries but the last (the image-text embedding), for training images with known attributes
            (`attribute_labels` in `forward`): each group of queries comes to depend on one attribute, so that
            stage 2 can quantize them into attribute-wise codes.
    """

    model_type = "seed_tokenizer_contrastive"

    image_text_hidden_size: int = 256
    initial_temperature: float = 0.07
    temperature_range: list[float] | tuple[float, float] = (0.001, 0.5)
    label_smoothing: float = 0.1
    freeze_vision_model: bool = True
    teacher_distillation_weight: float = 0.0
    attribute_loss_weight: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.qformer_config.use_qformer_text_input = True
        self.temperature_range = list(self.temperature_range)
        low, high = self.temperature_range
        if not 0 < low <= self.initial_temperature <= high:
            raise ValueError(
                f"initial_temperature ({self.initial_temperature}) must lie in temperature_range {self.temperature_range}"
            )


@dataclass
class SeedTokenizerContrastiveOutput(ModelOutput):
    """
    Outputs of [`SeedTokenizerForImageTextContrastive`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): the symmetric image-text contrastive loss (plus the weighted
            distillation term, if any).
        contrastive_loss (`torch.FloatTensor` of shape `()`): the contrastive term (logged by name).
        distillation_loss (`torch.FloatTensor` of shape `()`, *optional*): `1 - cos` to the teacher's embedding.
        attribute_loss (`torch.FloatTensor` of shape `()`, *optional*): the unweighted attribute term.
        temperature (`torch.FloatTensor` of shape `()`): the (clamped) temperature used.
        logits_per_image (`torch.FloatTensor` of shape `(batch_size, global_batch_size)`):
            This process's images against the captions of all processes, divided by the temperature.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, image_text_hidden_size)`):
            Normalised projection of the last causal query.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, image_text_hidden_size)`):
            Normalised projection of the caption's [CLS] embedding.
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    attribute_loss: torch.FloatTensor | None = None
    temperature: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


class SeedTokenizerForImageTextContrastive(_SeedTokenizerStageModel):
    """
    Tokenizer stage 1: image-text contrastive training of the causal Q-Former.

    Module names follow transformers' `Blip2ForImageTextRetrieval` (`embeddings`, `vision_projection`,
    `text_projection`) so that BLIP-2 weights map onto it by prefix (see [`from_blip2_state_dict`]).
    Under several processes the embeddings of all processes are gathered (with gradient), so the loss and
    gradients equal those of one process holding the whole global batch.
    """

    config: SeedTokenizerContrastiveConfig
    config_class = SeedTokenizerContrastiveConfig
    _no_split_modules = [*SeedTokenizerPreTrainedModel._no_split_modules, "Blip2TextEmbeddings"]

    def __init__(self, config: SeedTokenizerContrastiveConfig, teacher: nn.Module | None = None):
        super().__init__(config)
        self.seed_tokenizer = SeedTokenizerModel(config)
        self.embeddings = Blip2TextEmbeddings(config.qformer_config)
        self.vision_projection = nn.Linear(config.hidden_size, config.image_text_hidden_size)
        self.text_projection = nn.Linear(config.hidden_size, config.image_text_hidden_size)
        self.temperature = nn.Parameter(torch.tensor(float(config.initial_temperature)))
        if config.teacher_distillation_weight:
            self.teacher_projection = nn.Linear(config.hidden_size, config.generation_embedding_dim)
        self.teacher = None
        self.post_init()
        _freeze(self.seed_tokenizer, _DECODER_SIDE)
        if config.freeze_vision_model:
            self.seed_tokenizer.vision_model.requires_grad_(False)
        if teacher is not None:
            self.set_teacher(teacher)

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.constant_(module.temperature, self.config.initial_temperature)
        elif isinstance(module, Blip2TextEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def _frozen_parts(self) -> tuple[str, ...]:
        return _DECODER_SIDE + (("vision_model",) if self.config.freeze_vision_model else ())

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised projection of the last causal query: `[B, image_text_hidden_size]`."""
        return F.normalize(self.vision_projection(self._last_causal_query(pixel_values)), dim=-1)

    def _last_causal_query(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._causal_embeddings(pixel_values)[:, -1]

    def _causal_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_vision_model):
            image_features = self.seed_tokenizer.image_features(pixel_values)
        return self.seed_tokenizer.causal_embeddings_from_image_features(image_features)

    def text_embeddings(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalised projection of the caption's [CLS] (first token) embedding: `[B, image_text_hidden_size]`."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, sequence), got {tuple(input_ids.shape)}")
        text = self.seed_tokenizer.qformer(
            query_embeds=self.embeddings(input_ids=input_ids), query_length=0, attention_mask=attention_mask
        ).last_hidden_state
        return F.normalize(self.text_projection(text[:, 0]), dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        teacher_image_embeds: torch.Tensor | None = None,
        teacher_pixel_values: torch.Tensor | None = None,
        attribute_labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SeedTokenizerContrastiveOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`): the images.
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): their captions, tokenized.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): caption padding.
        teacher_image_embeds, teacher_pixel_values: as in [`SeedTokenizerForCodebookTraining`]; used only with
            `config.teacher_distillation_weight`.
        attribute_labels: as in [`SeedTokenizerForCodebookTraining`]; required when
            `config.attribute_loss_weight` is positive.
        """
        _check_attribute_labels(self.config, attribute_labels)
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"pixel_values and input_ids must hold the same number of pairs, got {pixel_values.shape[0]} "
                f"and {input_ids.shape[0]}"
            )
        causal_embeddings = self._causal_embeddings(pixel_values)
        last_query = causal_embeddings[:, -1]
        image_embeds = F.normalize(self.vision_projection(last_query), dim=-1)
        text_embeds = self.text_embeddings(input_ids, attention_mask)
        rank, world_size = _world()
        if world_size > 1:
            all_image_embeds, all_text_embeds = (
                _GatherWithGrad.apply(image_embeds),
                _GatherWithGrad.apply(text_embeds),
            )
        else:
            all_image_embeds, all_text_embeds = image_embeds, text_embeds
        temperature = self.temperature.clamp(*self.config.temperature_range)
        logits_per_image = image_embeds @ all_text_embeds.t() / temperature
        logits_per_text = text_embeds @ all_image_embeds.t() / temperature
        targets = (
            torch.arange(image_embeds.shape[0], device=image_embeds.device) + rank * image_embeds.shape[0]
        )
        smoothing = self.config.label_smoothing
        contrastive_loss = (
            F.cross_entropy(logits_per_image, targets, label_smoothing=smoothing)
            + F.cross_entropy(logits_per_text, targets, label_smoothing=smoothing)
        ) / 2
        loss, distillation_loss = contrastive_loss, None
        if self.config.teacher_distillation_weight:
            target = self._teacher_image_embeds(pixel_values, teacher_pixel_values, teacher_image_embeds)
            prediction = self.teacher_projection(last_query)
            distillation_loss = (
                1 - F.cosine_similarity(prediction, target.to(prediction.dtype), dim=-1)
            ).mean()
            loss = loss + self.config.teacher_distillation_weight * distillation_loss
        attribute_loss = None
        if self.config.attribute_loss_weight > 0:
            attribute_loss = attribute_group_loss(causal_embeddings, attribute_labels, include_last=False)
            loss = loss + self.config.attribute_loss_weight * attribute_loss
        return SeedTokenizerContrastiveOutput(
            loss=loss,
            contrastive_loss=contrastive_loss.detach(),
            distillation_loss=None if distillation_loss is None else distillation_loss.detach(),
            attribute_loss=None if attribute_loss is None else attribute_loss.detach(),
            temperature=temperature.detach(),
            logits_per_image=logits_per_image,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )

    @classmethod
    def from_tokenizer(
        cls, tokenizer: SeedTokenizerModel, **settings
    ) -> "SeedTokenizerForImageTextContrastive":
        """Stage-1 model around the weights of a [`SeedTokenizerModel`]; the text side starts fresh."""
        model = cls(SeedTokenizerContrastiveConfig(**_tokenizer_config_values(tokenizer.config), **settings))
        model._load_tokenizer_weights(tokenizer)
        return model

    @classmethod
    def from_blip2_state_dict(
        cls, config: SeedTokenizerContrastiveConfig, state_dict: dict[str, torch.Tensor]
    ) -> "SeedTokenizerForImageTextContrastive":
        """
        Stage-1 model initialised from a transformers BLIP-2 retrieval checkpoint's state dict
        (`Blip2ForImageTextRetrieval`, e.g. `Salesforce/blip2-itm-vit-g`), as the paper initialises the
        causal Q-Former from BLIP-2: the vision tower, queries, Q-Former (both sides), text embeddings and
        projections are copied; the ITM head is not used; the decoder side stays freshly initialised.
        """
        model = cls(config)
        mapped = {}
        for key, value in state_dict.items():
            if key.startswith(("vision_model.", "qformer.")) or key == "query_tokens":
                mapped[f"seed_tokenizer.{key}"] = value
            elif key.startswith(("embeddings.", "vision_projection.", "text_projection.")):
                mapped[key] = value
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        missing = [
            key for key in missing if not key.startswith(tuple(f"seed_tokenizer.{n}" for n in _DECODER_SIDE))
        ]
        missing = [key for key in missing if key != "temperature"]
        if missing or unexpected:
            raise ValueError(
                f"state_dict does not fit the stage-1 model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model


# ---------------------------------------------------------------------------------------------- stage 2
class SeedTokenizerCodebookTrainingConfig(SeedTokenizerConfig):
    r"""
    Configuration of [`SeedTokenizerForCodebookTraining`] (tokenizer stage 2): a [`SeedTokenizerConfig`] plus
    the loss weights. `commitment_cost` (0.25) is the VQ beta.

    Args:
        vq_loss_weight (`float`, *optional*, defaults to 5.0):
            Weight of the VQ loss.
        reconstruction_loss_weight (`float`, *optional*, defaults to 2.0):
            Weight of `1 - cos(reconstruction, causal embeddings)`.
        generation_loss_weight (`float`, *optional*, defaults to 0.5):
            Weight of `MSE(generation embedding, teacher image embedding)`.
        beta_on_codebook_term (`bool`, *optional*, defaults to `False`):
            By default `vq = codebook + beta * commitment` (VQ-VAE). `True` gives the authors' released
            training, which used taming-transformers' legacy quantizer: `vq = commitment + beta * codebook`.
        codebook_restart_every (`int`, *optional*, defaults to 0):
            When positive (not in the paper), every that many training steps the codes no batch picked since the
            last restart are re-drawn from the current batch's code-space vectors; the first step re-draws all
            unused codes, i.e. starts the codebook from the data. A codebook trained from scratch otherwise
            collapses onto the few entries nearest the data (on SEED-Shapes: 48 of 512 codes used, 53 distinct
            code sequences for 972 images).
        attribute_loss_weight (`float`, *optional*, defaults to 0.0):
            When positive (not in the paper), weight of [`attribute_group_loss`] on the code-space projections:
            it makes the codes attribute-wise (each group of positions depends on one attribute) for training
            data whose images carry known attributes (`attribute_labels` in `forward`). Without it, one
            attribute changed rewrites most of an image's codes (`docs/shapes-composition-findings.md`).
    """

    model_type = "seed_tokenizer_codebook_training"

    vq_loss_weight: float = 5.0
    reconstruction_loss_weight: float = 2.0
    generation_loss_weight: float = 0.5
    beta_on_codebook_term: bool = False
    codebook_restart_every: int = 0
    attribute_loss_weight: float = 0.0


@dataclass
class SeedTokenizerCodebookTrainingOutput(ModelOutput):
    """
    Outputs of [`SeedTokenizerForCodebookTraining`]; the `*_loss` fields are detached, for logging.

    Args:
        loss (`torch.FloatTensor` of shape `()`): the weighted total.
        vq_loss, codebook_loss, commitment_loss, reconstruction_loss, generation_loss (`torch.FloatTensor` of
            shape `()`): the unweighted terms (`vq_loss` combines the codebook and commitment terms).
        attribute_loss (`torch.FloatTensor` of shape `()`, *optional*): the unweighted attribute term, when
            `attribute_loss_weight` is positive.
        image_codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)`): the codes picked.
        generation_embeddings (`torch.FloatTensor` of shape `(batch_size, generation_embedding_dim)`).
    """

    loss: torch.FloatTensor | None = None
    vq_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    generation_loss: torch.FloatTensor | None = None
    attribute_loss: torch.FloatTensor | None = None
    image_codes: torch.LongTensor | None = None
    generation_embeddings: torch.FloatTensor | None = None


class SeedTokenizerForCodebookTraining(_SeedTokenizerStageModel):
    """
    Tokenizer stage 2: codebook, task layers, reconstruction and generation heads, with the vision tower and
    causal Q-Former frozen.

    The generation head regresses a teacher image embedding: either `teacher_image_embeds` passed to
    `forward` (precomputed, e.g. a dataset column) or the output of `teacher`, any CLIP-style vision model
    with a projection whose output has `image_embeds` (transformers' `CLIPVisionModelWithProjection`; the
    paper uses OpenCLIP ViT-H/14, the image encoder of unCLIP SD 2.1). The teacher is frozen and not saved
    in checkpoints.
    """

    config: SeedTokenizerCodebookTrainingConfig
    config_class = SeedTokenizerCodebookTrainingConfig

    def __init__(self, config: SeedTokenizerCodebookTrainingConfig, teacher: nn.Module | None = None):
        super().__init__(config)
        self.seed_tokenizer = SeedTokenizerModel(config)
        # codebook restarts: uses of each code since the last restart, and training steps taken (saved in
        # checkpoints, so that a resumed run restarts exactly as an uninterrupted one)
        self.register_buffer("code_uses", torch.zeros(config.num_codes, dtype=torch.long))
        self.register_buffer("restart_steps", torch.zeros((), dtype=torch.long))
        self.post_init()
        _freeze(self.seed_tokenizer, _ENCODER_SIDE)
        self.teacher = None
        if teacher is not None:
            self.set_teacher(teacher)

    def _frozen_parts(self) -> tuple[str, ...]:
        return _ENCODER_SIDE

    @classmethod
    def from_tokenizer(
        cls, tokenizer: SeedTokenizerModel, teacher: nn.Module | None = None, **loss_settings
    ) -> "SeedTokenizerForCodebookTraining":
        """Stage-2 model around the weights of a (stage-1) [`SeedTokenizerModel`]."""
        values = _tokenizer_config_values(tokenizer.config)
        model = cls(SeedTokenizerCodebookTrainingConfig(**values, **loss_settings), teacher=teacher)
        model._load_tokenizer_weights(tokenizer)
        return model

    @torch.no_grad()
    def _restart_unused_codes(self, image_codes: torch.LongTensor, code_space: torch.Tensor) -> None:
        """Count this batch's codes; on a restart step, re-draw every code unused since the last one from this
        batch's code-space vectors (the same draw in every process)."""
        uses = torch.bincount(image_codes.flatten(), minlength=self.config.num_codes)
        if _world()[1] > 1:
            dist.all_reduce(uses)
        self.code_uses += uses
        if int(self.restart_steps) % self.config.codebook_restart_every == 0:
            unused = (self.code_uses == 0).nonzero().flatten()
            if len(unused):
                allowed = self.seed_tokenizer.allowed_codes()
                if allowed is None:
                    candidates = code_space.detach().reshape(-1, self.config.code_dim)
                    picked = candidates[
                        torch.randint(len(candidates), (len(unused),), device=candidates.device)
                    ]
                else:
                    # a code of a factorised code space is re-drawn from the vectors of its own positions
                    positions = torch.multinomial(allowed[:, unused.cpu()].t().float(), 1).flatten()
                    images = torch.randint(code_space.shape[0], (len(unused),))
                    picked = code_space.detach()[
                        images.to(code_space.device), positions.to(code_space.device)
                    ]
                weight = self.seed_tokenizer.codebook.weight
                weight[unused] = picked.to(weight.dtype)
                if _world()[1] > 1:
                    dist.broadcast(weight.data, src=0)
            self.code_uses.zero_()
        self.restart_steps += 1

    def forward(
        self,
        pixel_values: torch.Tensor,
        teacher_image_embeds: torch.Tensor | None = None,
        teacher_pixel_values: torch.Tensor | None = None,
        attribute_labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SeedTokenizerCodebookTrainingOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`): the images.
        teacher_image_embeds (`torch.FloatTensor` of shape `(batch_size, generation_embedding_dim)`, *optional*):
            Precomputed teacher embeddings of the images; otherwise the attached teacher computes them.
        teacher_pixel_values (`torch.FloatTensor`, *optional*):
            The images as the teacher expects them, when its pre-processing differs from the tokenizer's.
        attribute_labels (`torch.LongTensor` of shape `(batch_size, num_attributes)`, *optional*):
            Each image's value of each attribute (any integers, equal for equal values); required when
            `config.attribute_loss_weight` is positive.
        """
        config = self.config
        _check_attribute_labels(config, attribute_labels)
        tokenizer = self.seed_tokenizer
        with torch.no_grad():
            causal_embeddings = tokenizer.causal_embeddings(pixel_values)
        image_codes, code_space = tokenizer.quantize(causal_embeddings)
        if self.training and self.config.codebook_restart_every > 0:
            self._restart_unused_codes(image_codes, code_space)
            image_codes, code_space = tokenizer.quantize(causal_embeddings)
        quantized = tokenizer.codebook(image_codes)
        codebook_loss = F.mse_loss(quantized, code_space.detach())
        commitment_loss = F.mse_loss(code_space, quantized.detach())
        beta = self.config.commitment_cost
        if self.config.beta_on_codebook_term:
            vq_loss = commitment_loss + beta * codebook_loss
        else:
            vq_loss = codebook_loss + beta * commitment_loss
        # straight-through: the decoder sees the codebook vectors, the encoder gets their gradient
        upsampled = tokenizer.decode_task_layer(code_space + (quantized - code_space).detach())
        reconstruction = tokenizer.reconstruction_blocks(upsampled)
        reconstruction_loss = (1 - F.cosine_similarity(reconstruction, causal_embeddings, dim=-1)).mean()
        generation_embeddings = tokenizer.generation_embeddings_from_upsampled(upsampled)
        target = self._teacher_image_embeds(pixel_values, teacher_pixel_values, teacher_image_embeds)
        if target.shape != generation_embeddings.shape:
            raise ValueError(
                f"teacher image embeddings must have shape {tuple(generation_embeddings.shape)} "
                f"(batch, generation_embedding_dim), got {tuple(target.shape)}"
            )
        generation_loss = F.mse_loss(generation_embeddings, target.to(generation_embeddings.dtype))
        loss = (
            config.vq_loss_weight * vq_loss
            + config.reconstruction_loss_weight * reconstruction_loss
            + config.generation_loss_weight * generation_loss
        )
        attribute_loss = None
        if config.attribute_loss_weight > 0:
            attribute_loss = attribute_group_loss(code_space, attribute_labels)
            loss = loss + config.attribute_loss_weight * attribute_loss
        return SeedTokenizerCodebookTrainingOutput(
            loss=loss,
            vq_loss=vq_loss.detach(),
            codebook_loss=codebook_loss.detach(),
            commitment_loss=commitment_loss.detach(),
            reconstruction_loss=reconstruction_loss.detach(),
            generation_loss=generation_loss.detach(),
            attribute_loss=None if attribute_loss is None else attribute_loss.detach(),
            image_codes=image_codes,
            generation_embeddings=generation_embeddings,
        )


__all__ = [
    "attribute_group_loss",
    "query_attribute_groups",
    "SeedTokenizerCodebookTrainingConfig",
    "SeedTokenizerCodebookTrainingOutput",
    "SeedTokenizerContrastiveConfig",
    "SeedTokenizerContrastiveOutput",
    "SeedTokenizerForCodebookTraining",
    "SeedTokenizerForImageTextContrastive",
]
