"""SEED de-tokenizer: 32 image codes -> generation embedding -> unCLIP Stable Diffusion -> image.

[`SeedUnCLIPPipeline`] is diffusers' `StableUnCLIPImg2ImgPipeline` with the CLIP image encoder replaced by the
SEED tokenizer: the tokenizer's `decode` turns codes into a generation embedding that was trained to regress
the CLIP image embedding the unCLIP UNet is conditioned on. This module imports diffusers at import time; the
`seed_hf` package only reaches it on first use of `seed_hf.SeedUnCLIPPipeline`.
"""

import copy
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput, StableDiffusionMixin
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from .seed_unclip_inputs import (
    PerCall,
    check_call_settings,
    check_conditions,
    check_embedding_sizes,
    check_generator,
    check_integer,
    check_size,
    codes_tensor,
)

try:  # a checkpoint's copy of this file (remote code): the modeling files sit beside it
    from .checkpoint_components import component_folder, copy_code_files, hub_kwargs_of
    from .configuration_seed_tokenizer import SeedTokenizerConfig  # noqa: F401  (diffusers copies direct imports only)
    from .modeling_seed_tokenizer import SeedTokenizerModel
except ImportError:  # the seed-hf package
    from seed_hf.modeling.checkpoint_components import component_folder, copy_code_files, hub_kwargs_of

    # at module level so that diffusers' loader, which resolves a component saved as
    # ["seed_hf.modeling.modeling_seed_tokenizer", "SeedTokenizerModel"] through `sys.modules`, finds it
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel


class SeedUnCLIPPipeline(DiffusionPipeline, StableDiffusionMixin):
    r"""
    Pipeline that de-tokenizes SEED image codes into images with the unCLIP Stable Diffusion 2.1 UNet.

    Image codes go through [`SeedTokenizerModel.decode`] to a generation embedding; the embedding (noised at
    `noise_level`, then concatenated with the noise-level embedding) is the class embedding of the unCLIP UNet,
    whose cross-attention sees the CLIP encoding of the empty prompt. Classifier-free guidance contrasts the
    embedding with zeros or with the embedding of user-given negative codes; both branches run in one UNet batch.

    This model inherits from [`DiffusionPipeline`] (saving, loading, devices, CPU offload, attention slicing,
    progress bar).

    Args:
        seed_tokenizer ([`SeedTokenizerModel`], *optional*):
            The SEED visual tokenizer whose `decode` maps 32 codes to a generation embedding. Only needed for
            `image_codes`; a pipeline without it accepts `image_embeds`.
        image_normalizer ([`StableUnCLIPImageNormalizer`]):
            Mean and std of the CLIP image embeddings, used around the noising of the embedding.
        image_noising_scheduler ([`KarrasDiffusionSchedulers`]):
            Noise schedule applied to the embedding at `noise_level`.
        tokenizer ([`~transformers.CLIPTokenizer`]):
            Tokenizer of the text encoder (only the empty prompt is encoded).
        text_encoder ([`~transformers.CLIPTextModel`]):
            Frozen CLIP text encoder.
        unet ([`UNet2DConditionModel`]):
            The unCLIP UNet (`class_embed_type="projection"`, projection input = 2 x the embedding size).
        scheduler ([`KarrasDiffusionSchedulers`]):
            Denoising scheduler; any diffusers scheduler can be swapped in, e.g.
            `DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)` for DPM-Solver++.
        vae ([`AutoencoderKL`]):
            Decoder of the latents into images.
        seed_tokenizer_name_or_path (`str`, *optional*):
            Where the SEED tokenizer is when the pipeline is saved without it; a relative path is resolved against
            the pipeline's folder or Hub repo (`"../visual_tokenizer"` inside a SEED checkpoint). `from_pretrained`
            attaches it unless `seed_tokenizer=` is passed.
        default_num_inference_steps (`int`, *optional*, defaults to 20), default_guidance_scale (`float`, *optional*,
            defaults to 10.0):
            The recommended decoder settings, used when a call does not give `num_inference_steps` /
            `guidance_scale`; saved in `model_index.json` (the defaults are the SEED release's).
    """

    model_cpu_offload_seq = "text_encoder->seed_tokenizer->unet->vae"
    _exclude_from_cpu_offload = ["image_normalizer"]
    _optional_components = ["seed_tokenizer"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "image_embeds"]
    # the state of the current call, per thread: concurrent calls share the pipeline object
    _interrupt = PerCall(default=False)
    _guidance_scale = PerCall()
    _num_timesteps = PerCall()

    # The unCLIP components a stable-diffusion-2-1-unclip folder provides (everything but the CLIP image encoder).
    _unclip_components = (
        "image_normalizer",
        "image_noising_scheduler",
        "tokenizer",
        "text_encoder",
        "unet",
        "scheduler",
        "vae",
    )

    def __init__(
        self,
        seed_tokenizer: SeedTokenizerModel | None,
        image_normalizer: StableUnCLIPImageNormalizer,
        image_noising_scheduler: KarrasDiffusionSchedulers,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        vae: AutoencoderKL,
        seed_tokenizer_name_or_path: str | None = None,
        default_num_inference_steps: int = 20,
        default_guidance_scale: float = 10.0,
    ):
        super().__init__()
        if seed_tokenizer is not None:
            check_embedding_sizes(seed_tokenizer, image_normalizer)
        self.register_modules(
            seed_tokenizer=seed_tokenizer,
            image_normalizer=image_normalizer,
            image_noising_scheduler=image_noising_scheduler,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            unet=unet,
            scheduler=scheduler,
            vae=vae,
        )
        self.register_to_config(
            seed_tokenizer_name_or_path=seed_tokenizer_name_or_path,
            default_num_inference_steps=default_num_inference_steps,
            default_guidance_scale=default_guidance_scale,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        # ((text encoder, device, dtype), encoding of ""): the prompt never changes, so it is encoded once.
        self._empty_prompt_cache: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_unclip(
        cls,
        unclip_folder: str | os.PathLike,
        seed_tokenizer: SeedTokenizerModel | str | os.PathLike,
        **kwargs,
    ) -> "SeedUnCLIPPipeline":
        r"""
        Assemble the de-tokenizer from a `stabilityai/stable-diffusion-2-1-unclip`-layout folder and a SEED tokenizer.

        The folder's CLIP image encoder and feature extractor are not loaded: the SEED tokenizer replaces them.

        Args:
            unclip_folder (`str` or `os.PathLike`):
                A diffusers `StableUnCLIPImg2ImgPipeline` folder (local path or Hub id).
            seed_tokenizer ([`SeedTokenizerModel`], `str` or `os.PathLike`):
                The converted SEED tokenizer, or a folder it was saved to.
            kwargs:
                Passed to `StableUnCLIPImg2ImgPipeline.from_pretrained` (e.g. `dtype`, `variant`); `dtype` also
                applies to a `seed_tokenizer` given as a folder.
        """
        if isinstance(seed_tokenizer, (str, os.PathLike)):
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            dtype_kwargs = {} if dtype is None else {"dtype": dtype}
            seed_tokenizer = SeedTokenizerModel.from_pretrained(seed_tokenizer, **dtype_kwargs)
        elif not isinstance(seed_tokenizer, SeedTokenizerModel):
            raise TypeError(
                f"`seed_tokenizer` must be a SeedTokenizerModel or a folder holding one, got {type(seed_tokenizer)}"
            )
        # imported here: diffusers' unCLIP module warns about torchvision on import, and only this method needs it
        from diffusers import StableUnCLIPImg2ImgPipeline

        unclip = StableUnCLIPImg2ImgPipeline.from_pretrained(
            unclip_folder, image_encoder=None, feature_extractor=None, **kwargs
        )
        return cls(
            seed_tokenizer=seed_tokenizer, **{name: getattr(unclip, name) for name in cls._unclip_components}
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs
    ):
        r"""
        `DiffusionPipeline.from_pretrained`, plus:

        - `subfolder`: the pipeline inside a larger checkpoint, e.g. `from_pretrained("org/seed-llama",
          subfolder="detokenizer")`, local or by Hub repo id (only that folder is fetched, with the same `revision`,
          `cache_dir`, `token` and `local_files_only`);
        - without `seed_tokenizer=`, the SEED tokenizer named by `seed_tokenizer_name_or_path` (the checkpoint's
          `visual_tokenizer/`) is attached, in the pipeline's `dtype`.
        """
        checkpoint = str(pretrained_model_name_or_path)
        hub_kwargs = hub_kwargs_of(kwargs)
        folder = component_folder(checkpoint, subfolder, None, hub_kwargs) if subfolder else checkpoint
        pipeline = super().from_pretrained(folder, **kwargs)
        name_or_path = pipeline.config.get("seed_tokenizer_name_or_path")
        if "seed_tokenizer" not in kwargs and pipeline.seed_tokenizer is None and name_or_path:
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            seed_tokenizer = SeedTokenizerModel.from_pretrained(
                component_folder(checkpoint, name_or_path, subfolder, hub_kwargs),
                **({} if dtype is None else {"dtype": dtype}),
            )
            check_embedding_sizes(seed_tokenizer, pipeline.image_normalizer)
            pipeline.register_modules(seed_tokenizer=seed_tokenizer.eval())
        return pipeline

    @classmethod
    def load_config(cls, *args, **kwargs):
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        # a saved folder names its own copy of this file ([module, class]) for diffusers without seed-hf; loading
        # through this class, that code is this class already
        if isinstance(config.get("_class_name"), (list, tuple)):
            config["_class_name"] = config["_class_name"][1]
        return loaded

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        """
        `DiffusionPipeline.save_pretrained` (files of other pipelines in the folder are kept, as diffusers does),
        plus the pipeline's code: `model_index.json` names this file as the custom pipeline (`[module, class]`) and
        the file and the modeling files it imports are copied beside it, so that
        `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads it without seed-hf. With
        `push_to_hub=True` the folder is then uploaded (hub arguments as in `push_to_hub`).
        """
        hub_kwargs = {
            k: kwargs.pop(k)
            for k in ("repo_id", "commit_message", "private", "token", "create_pr")
            if k in kwargs
        }
        super().save_pretrained(save_directory, **kwargs)
        module_file = inspect.getfile(type(self))
        copy_code_files(module_file, save_directory)
        index_file = os.path.join(save_directory, "model_index.json")
        with open(index_file, encoding="utf-8") as file:
            model_index = json.load(file)
        model_index["_class_name"] = [os.path.splitext(os.path.basename(module_file))[0], type(self).__name__]
        with open(index_file, "w", encoding="utf-8") as file:
            json.dump(model_index, file, indent=2, sort_keys=True)
            file.write("\n")
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            save_kwargs = {k: kwargs[k] for k in ("safe_serialization", "variant") if k in kwargs}
            self.push_to_hub(repo_id, **hub_kwargs, **save_kwargs)

    @property
    def embedding_dim(self) -> int:
        """Size of the image (generation) embedding the UNet is conditioned on."""
        return self.image_normalizer.config.embedding_dim

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Whether the current call of this thread was interrupted (a step callback sets `pipe._interrupt = True`;
        the remaining steps are skipped). Calls in other threads are not affected."""
        return self._interrupt

    def encode_empty_prompt(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """CLIP text encoding `[1, max_length, width]` of the empty prompt, computed once per device and dtype."""
        key = (self.text_encoder, device, dtype)
        if self._empty_prompt_cache is None or self._empty_prompt_cache[0] != key:
            input_ids = self.tokenizer(
                "", padding="max_length", max_length=self.tokenizer.model_max_length, return_tensors="pt"
            ).input_ids
            embeds = self.text_encoder(input_ids.to(device))[0]
            self._empty_prompt_cache = (key, embeds.to(device=device, dtype=dtype))
        return self._empty_prompt_cache[1]

    def decode_image_codes(self, image_codes: torch.Tensor) -> torch.Tensor:
        """Generation embeddings `[B, embedding_dim]` of SEED image codes `[B, num_query_tokens]`."""
        if self.seed_tokenizer is None:
            raise ValueError(
                "decoding image codes needs a `seed_tokenizer`; this pipeline has none, pass embeddings"
            )
        return self.seed_tokenizer.decode(image_codes.to(self._execution_device))

    def noise_image_embeddings(
        self, image_embeds: torch.Tensor, noise_level: int, generator: torch.Generator | list | None = None
    ) -> torch.Tensor:
        """
        Noise the (normalised) embeddings to `noise_level` with `image_noising_scheduler` and append the sinusoidal
        embedding of the noise level, as the unCLIP UNet's class embedding expects: `[B, D] -> [B, 2 D]`.
        """
        noise = randn_tensor(
            image_embeds.shape, generator=generator, device=image_embeds.device, dtype=image_embeds.dtype
        )
        levels = torch.full(
            (image_embeds.shape[0],), noise_level, device=image_embeds.device, dtype=torch.long
        )
        self.image_normalizer.to(image_embeds.device)
        image_embeds = self.image_normalizer.scale(image_embeds)
        image_embeds = self.image_noising_scheduler.add_noise(image_embeds, timesteps=levels, noise=noise)
        image_embeds = self.image_normalizer.unscale(image_embeds)
        level_embeds = get_timestep_embedding(
            levels, embedding_dim=image_embeds.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0
        )
        return torch.cat((image_embeds, level_embeds.to(image_embeds.dtype)), dim=1)

    def prepare_latents(
        self, batch_size, height, width, dtype, device, generator, latents=None, scheduler=None
    ) -> torch.Tensor:
        """The initial latents (drawn from `generator`, or `latents` checked), scaled by the initial noise sigma of
        `scheduler` (default: the pipeline's)."""
        shape = (
            batch_size,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif not isinstance(latents, torch.Tensor):
            raise TypeError(f"`latents` must be a torch.Tensor, got {type(latents).__name__}")
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {list(shape)}, got {list(latents.shape)}")
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents * (scheduler or self.scheduler).init_noise_sigma

    def prepare_extra_step_kwargs(self, generator, eta: float, scheduler=None) -> dict:
        # schedulers differ in whether `step` takes `eta` (DDIM only) and `generator`
        step_parameters = inspect.signature((scheduler or self.scheduler).step).parameters
        extra = {}
        if "eta" in step_parameters:
            extra["eta"] = eta
        if "generator" in step_parameters:
            extra["generator"] = generator
        return extra

    def check_inputs(
        self,
        image_codes,
        image_embeds,
        negative_image_codes,
        negative_image_embeds,
        height,
        width,
        noise_level,
        num_images_per_prompt,
        generator,
        callback_on_step_end_tensor_inputs,
    ):
        config = None if self.seed_tokenizer is None else self.seed_tokenizer.config
        batch_size = check_conditions(
            image_codes, image_embeds, negative_image_codes, negative_image_embeds, self.embedding_dim, config
        )
        check_size("height", height, self.vae_scale_factor)
        check_size("width", width, self.vae_scale_factor)
        check_integer("noise_level", noise_level, 0, self.image_noising_scheduler.config.num_train_timesteps)
        check_integer("num_images_per_prompt", num_images_per_prompt)
        check_generator(generator, batch_size * num_images_per_prompt)
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be among {self._callback_tensor_inputs}, got {unknown}"
            )

    def _generation_embeddings(self, codes, embeds) -> torch.Tensor:
        if codes is not None:
            return self.decode_image_codes(codes)
        return embeds.to(self._execution_device)

    @torch.no_grad()
    def __call__(
        self,
        image_codes: torch.Tensor | list[torch.Tensor] | list[list[int]] | None = None,
        image_embeds: torch.Tensor | None = None,
        negative_image_codes: torch.Tensor | list[torch.Tensor] | list[list[int]] | None = None,
        negative_image_embeds: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        noise_level: int = 0,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        De-tokenize SEED image codes (or generation embeddings) into images.

        Args:
            image_codes (`torch.LongTensor` of shape `(batch, num_query_tokens)`, *optional*):
                SEED codes, each in `[0, num_codes)`; decoded by `seed_tokenizer` into generation embeddings. A list
                of 1-D code tensors or of lists of ints (one per image) is stacked into that shape.
            image_embeds (`torch.Tensor` of shape `(batch, embedding_dim)`, *optional*):
                Generation (or CLIP image) embeddings, instead of `image_codes`.
            negative_image_codes (`torch.LongTensor`, *optional*):
                Codes whose embedding is the unconditional branch of classifier-free guidance; same shape as
                `image_codes`. Without a negative, the unconditional branch is all zeros (the release behaviour).
            negative_image_embeds (`torch.Tensor`, *optional*):
                The negative as embeddings; same shape as the positive embeddings.
            height (`int`, *optional*), width (`int`, *optional*):
                Output size in pixels, multiples of the VAE scale factor; defaults to
                `unet.config.sample_size * vae_scale_factor` (768 for stable-diffusion-2-1-unclip).
            num_inference_steps (`int`, *optional*):
                Denoising steps; defaults to the pipeline's `default_num_inference_steps` (the SEED release: 20).
            guidance_scale (`float`, *optional*):
                Classifier-free guidance weight, off at `<= 1`; defaults to the pipeline's `default_guidance_scale`
                (the SEED release: 10).
            noise_level (`int`, *optional*, defaults to 0):
                Noise added to the embeddings (0 in the SEED release).
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Images generated per embedding.
            eta (`float`, *optional*, defaults to 0.0):
                DDIM's eta; ignored by other schedulers.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Randomness of the embedding noise, the initial latents and stochastic schedulers.
            latents (`torch.Tensor`, *optional*):
                Initial latents `(batch * num_images_per_prompt, C, height / f, width / f)`, before scaling by the
                scheduler's `init_noise_sigma`.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"` or `"latent"`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`~pipelines.ImagePipelineOutput`] instead of a tuple.
            cross_attention_kwargs (`dict`, *optional*):
                Passed to the UNet's attention processors.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called after each denoising step as `callback_on_step_end(pipe, step, timestep, callback_kwargs)`;
                it may return replacements for the tensors in `callback_kwargs`.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["latents"]`):
                Tensors passed in `callback_kwargs`; among `_callback_tensor_inputs`.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        image_codes = codes_tensor(image_codes, "image_codes")
        negative_image_codes = codes_tensor(negative_image_codes, "negative_image_codes")
        if num_inference_steps is None:
            num_inference_steps = self.config.default_num_inference_steps
        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        check_call_settings(num_inference_steps, guidance_scale, eta, output_type)
        default_size = self.unet.config.sample_size * self.vae_scale_factor
        height = default_size if height is None else height
        width = default_size if width is None else width
        self.check_inputs(
            image_codes,
            image_embeds,
            negative_image_codes,
            negative_image_embeds,
            height,
            width,
            noise_level,
            num_images_per_prompt,
            generator,
            callback_on_step_end_tensor_inputs,
        )
        self._guidance_scale = guidance_scale
        do_classifier_free_guidance = guidance_scale > 1.0
        self._interrupt = False
        device = self._execution_device
        dtype = self.unet.dtype

        # 1. Generation embeddings, repeated per image, then noised (one noise draw per image).
        image_embeds = self._generation_embeddings(image_codes, image_embeds)
        image_embeds = image_embeds.to(dtype).repeat_interleave(num_images_per_prompt, dim=0)
        batch_size = image_embeds.shape[0]
        image_embeds = self.noise_image_embeddings(image_embeds, noise_level, generator)
        if do_classifier_free_guidance:
            if negative_image_codes is None and negative_image_embeds is None:
                negative_embeds = torch.zeros_like(image_embeds)
            else:
                negative_embeds = self._generation_embeddings(negative_image_codes, negative_image_embeds)
                negative_embeds = negative_embeds.to(dtype).repeat_interleave(num_images_per_prompt, dim=0)
                negative_embeds = self.noise_image_embeddings(negative_embeds, noise_level, generator)
            # unconditional first, as in diffusers, so that one UNet call serves both branches
            image_embeds = torch.cat([negative_embeds, image_embeds])

        # 2. Empty-prompt text encoding (cached), one row per UNet input.
        prompt_embeds = self.encode_empty_prompt(device, dtype).expand(image_embeds.shape[0], -1, -1)

        # 3. Timesteps and initial latents, on a copy of the scheduler: `set_timesteps` and `step` keep state, which
        # concurrent calls must not share (`pipe.scheduler = ...` still chooses the scheduler).
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        latents = self.prepare_latents(
            batch_size, height, width, dtype, device, generator, latents, scheduler
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta, scheduler)

        # 4. Denoising loop.
        self._num_timesteps = len(timesteps)
        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                continue
            model_input = torch.cat([latents] * 2) if do_classifier_free_guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise_pred = self.unet(
                model_input,
                t,
                encoder_hidden_states=prompt_embeds,
                class_labels=image_embeds,
                cross_attention_kwargs=cross_attention_kwargs,
                return_dict=False,
            )[0]
            if do_classifier_free_guidance:
                noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
                noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_cond - noise_pred_uncond)
            latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

            if callback_on_step_end is not None:
                step_tensors = {
                    "latents": latents,
                    "prompt_embeds": prompt_embeds,
                    "image_embeds": image_embeds,
                }
                callback_kwargs = {k: step_tensors[k] for k in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = callback_outputs.pop("latents", latents)
                prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                image_embeds = callback_outputs.pop("image_embeds", image_embeds)

        # 5. Decode.
        if output_type == "latent":
            image = latents
        else:
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            image = self.image_processor.postprocess(image, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)


__all__ = ["SeedUnCLIPPipeline"]
