"""Configuration of SEED-LLaMA: a LLaMA whose vocabulary ends with the SEED image codes."""

import sys

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import LlamaConfig

# Layout of the released SEED-LLaMA vocabularies: the 32000 LLaMA tokens, then `<img_00000>` ... `<img_08191>`,
# then `<img>` and `</img>`.
_RELEASE_TEXT_VOCAB_SIZE = 32000
_RELEASE_NUM_IMAGE_CODES = 8192


@strict
class SeedLlamaConfig(LlamaConfig):
    r"""
    Configuration of [`SeedLlamaForCausalLM`]: every argument of [`~transformers.LlamaConfig`] plus the layout of
    the image tokens. The defaults are SEED-LLaMA-8B (Vicuna-7B with 8192 image codes added after the 32000 LLaMA
    tokens, then `<img>` and `</img>`).

    An image in a sequence is `<img>`, `tokens_per_image` code tokens (code `c` has id `image_code_start_id + c`),
    then `</img>`. A prompt image given as pixels is written `<img>` + `tokens_per_image` x `image_placeholder_id` +
    `</img>` by [`SeedLlamaProcessor`]; the model replaces those placeholders by the codes of its visual tokenizer.

    Args:
        num_image_codes (`int`, *optional*, defaults to 8192):
            Number of image codes (the SEED codebook size).
        tokens_per_image (`int`, *optional*, defaults to 32):
            Number of code tokens that make one image.
        image_code_start_id (`int`, *optional*, defaults to 32000):
            Token id of code 0 (`<img_00000>`); codes occupy `image_code_start_id` ...
            `image_code_start_id + num_image_codes - 1`.
        boi_token_id (`int`, *optional*, defaults to 40192):
            Token id of `<img>` (begin of image).
        eoi_token_id (`int`, *optional*, defaults to 40193):
            Token id of `</img>` (end of image).
        image_placeholder_id (`int`, *optional*, defaults to 40194):
            Token id of the `<image>` placeholder that stands for one code of an image given as pixels. It is
            never embedded (the model writes the codes over it before the embedding lookup), so it may lie past
            the last embedding row, as it does in converted releases: the released weights stay untouched. (Not
            named `*_token_id` because transformers expects those inside the vocabulary.)
        visual_tokenizer_name_or_path (`str`, *optional*):
            Where the SEED tokenizer (a `seed_tokenizer` model folder or Hub id) is; a relative path is resolved
            against the folder the model was loaded from. Loaded on first use of `pixel_values`.
        detokenizer_name_or_path (`str`, *optional*):
            Where the unCLIP de-tokenizer pipeline that turns generated codes into pictures is (same resolution
            rules). Read by the seed-hf pipelines, not by the model.
    """

    model_type = "seed_llama"

    vocab_size: int = _RELEASE_TEXT_VOCAB_SIZE + _RELEASE_NUM_IMAGE_CODES + 2
    num_image_codes: int = _RELEASE_NUM_IMAGE_CODES
    tokens_per_image: int = 32
    image_code_start_id: int = _RELEASE_TEXT_VOCAB_SIZE
    boi_token_id: int = _RELEASE_TEXT_VOCAB_SIZE + _RELEASE_NUM_IMAGE_CODES
    eoi_token_id: int = _RELEASE_TEXT_VOCAB_SIZE + _RELEASE_NUM_IMAGE_CODES + 1
    image_placeholder_id: int = _RELEASE_TEXT_VOCAB_SIZE + _RELEASE_NUM_IMAGE_CODES + 2
    visual_tokenizer_name_or_path: str | None = None
    detokenizer_name_or_path: str | None = None

    def __post_init__(self, **kwargs):
        # A saved checkpoint names its copies of the seed-hf pipeline tasks in `custom_pipelines`, which
        # `pipeline()` runs only with `trust_remote_code=True`. Where seed-hf is imported its registered tasks serve
        # the checkpoint instead (as transformers prefers installed code for models), so the entry is set aside
        # here and saved back unchanged.
        if "seed_hf" in sys.modules and "custom_pipelines" in kwargs:
            self._remote_code_pipelines = kwargs.pop("custom_pipelines")
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        # a checkpoint's config.json is user input: a bad value is a ValueError naming it (the strict dataclass's
        # own error type is not one)
        try:
            return super().from_dict(config_dict, **kwargs)
        except StrictDataclassClassValidationError as error:
            raise ValueError(str(error)) from error

    def to_dict(self):
        output = super().to_dict()
        if (pipelines := output.pop("_remote_code_pipelines", None)) is not None:
            output["custom_pipelines"] = pipelines
        return output

    def validate_architecture(self):
        super().validate_architecture()
        if self.num_image_codes <= 0 or self.tokens_per_image <= 0:
            raise ValueError(
                f"num_image_codes ({self.num_image_codes}) and tokens_per_image ({self.tokens_per_image}) must be positive"
            )
        code_end = self.image_code_start_id + self.num_image_codes
        if self.image_code_start_id < 0 or code_end > self.vocab_size:
            raise ValueError(
                f"image codes occupy ids [{self.image_code_start_id}, {code_end}), which must lie inside the "
                f"vocabulary [0, vocab_size={self.vocab_size})"
            )
        for name in ("boi_token_id", "eoi_token_id"):
            token_id = getattr(self, name)
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(f"{name} ({token_id}) must be a vocabulary id in [0, {self.vocab_size})")
        for name in ("boi_token_id", "eoi_token_id", "image_placeholder_id"):
            token_id = getattr(self, name)
            if self.image_code_start_id <= token_id < code_end:
                raise ValueError(
                    f"{name} ({token_id}) must not be an image-code id [{self.image_code_start_id}, {code_end})"
                )
        if len({self.boi_token_id, self.eoi_token_id, self.image_placeholder_id}) != 3:
            raise ValueError(
                f"boi_token_id ({self.boi_token_id}), eoi_token_id ({self.eoi_token_id}) and image_placeholder_id "
                f"({self.image_placeholder_id}) must be different ids"
            )


# saved configs carry `auto_map` and this file, for `trust_remote_code=True` where seed-hf is not installed
SeedLlamaConfig.register_for_auto_class()

__all__ = ["SeedLlamaConfig"]
