"""One-step conversion of the official SEED release into one complete SEED system folder.

`seed-hf convert-release --output-dir DIR` fetches only the files it needs from the three release repos, converts
them with the project's converters and writes the folder that `AutoModel`, `AutoProcessor` and the SEED pipelines
load (LLM and processor at the top, `visual_tokenizer/`, `detokenizer/`, model cards):

- `AILab-CVC/seed-tokenizer-2`: the authors' `seed_quantizer.pt` (-> [`~seed_hf.convert`]) and the SEED-LLaMA text
  tokenizer (`tokenizer.model`, `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`), which the
  LLM repos of the `-sft` release do not carry;
- `AILab-CVC/seed-llama-8b-sft` (or a sibling): `config.json`, `generation_config.json` and the weights,
  safetensors when the repo has them, else the `pytorch_model*.bin` shards of the release (->
  [`~seed_hf.convert_llama`]);
- `stabilityai/stable-diffusion-2-1-unclip`: the diffusers components the de-tokenizer keeps (`unet/`, `vae/`,
  `text_encoder/`, `tokenizer/`, `scheduler/`, `image_normalizer/`, `image_noising_scheduler/`, `model_index.json`),
  one weight format; never the CLIP `image_encoder/` or `feature_extractor/`, which the SEED tokenizer replaces.

Whatever a snapshot folder holds besides the selected files (earlier downloads, an offline cache of the whole repo)
is never read: the converters work on a view of the selected files only. The result is checked before it is put in
place (the LLM answers a prompt with an image, the de-tokenizer draws), and the parity evidence gathered on the way
goes into the model card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from huggingface_hub.utils import validate_repo_id
from tqdm.auto import tqdm

from seed_hf.convert_cli import add_output_arguments
from seed_hf.io_utils import staged_directory
from seed_hf.logging_utils import get_logger
from seed_hf.release_check import LLM_PARITY_KEY, check_folder, parity_prompt_ids, tokenizer_parity
from seed_hf.release_fetch import (
    QUANTIZER_FILE,
    RELEASE_LLM_REPO,
    RELEASE_TOKENIZER_REPO,
    RELEASE_UNCLIP_REPO,
    ReleaseConversionError,
    ReleaseSources,
    argument_label,
    fetch_release,
)

logger = get_logger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHAT_TEMPLATES = ("vicuna", "llama2")
STEPS = ("fetch", "convert tokenizer", "convert LLM", "assemble de-tokenizer", "save", "check", "cards")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _release_chat_template(llm_repo: str) -> str:
    # SEED-LLaMA-14B is fine-tuned from LLaMA-2-chat ([INST] ... [/INST]); 8B from Vicuna (USER: ... ASSISTANT:)
    return "llama2" if "14b" in llm_repo.lower() else "vicuna"


def _resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"{argument_label('dtype')} must be one of {', '.join(DTYPES)}, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(
            f"{argument_label('dtype')} must be one of {', '.join(DTYPES)} or 'auto', got {dtype!r}"
        )
    return DTYPES[dtype]


def _validate_repo(name: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{argument_label(name)} must be a Hub repo id like 'org/name', got {value!r}")
    try:
        validate_repo_id(value)
    except ValueError as error:
        raise ValueError(f"{argument_label(name)} is not a valid Hub repo id: {error}") from error


def convert_release(
    output_dir: str | os.PathLike,
    *,
    tokenizer_repo: str = RELEASE_TOKENIZER_REPO,
    llm_repo: str = RELEASE_LLM_REPO,
    unclip_repo: str = RELEASE_UNCLIP_REPO,
    revision_tokenizer: str | None = None,
    revision_llm: str | None = None,
    revision_unclip: str | None = None,
    dtype: str | torch.dtype | None = None,
    chat_template: str | None = None,
    tokenizer_config=None,
    tokenizer_reference: str | os.PathLike | None = None,
    unclip_variant: str | None = None,
    check_llm_parity: bool = True,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
) -> Path:
    """
    Convert the official SEED release (SEED tokenizer, SEED-LLaMA, unCLIP Stable Diffusion) into one SEED system
    folder: the LLM and its processor at the top, `visual_tokenizer/`, `detokenizer/` and the model cards.

    Steps (with a progress bar): fetch only the needed files ([`fetch_release`]); convert the authors'
    `seed_quantizer.pt` ([`~seed_hf.convert.convert_seed_tokenizer`]); convert the LLM
    ([`~seed_hf.convert_llama.convert_seed_llama`]); assemble the de-tokenizer
    ([`SeedUnCLIPPipeline.from_unclip`]); save ([`save_seed_checkpoint`]); check that the folder loads
    (`AutoModel` + `AutoProcessor` answer a prompt with an image, the de-tokenizer draws one image from codes in
    2 steps); write the cards with the parity evidence (`seed_hf.model_cards.write_converted_cards`). Everything is
    written to a temporary sibling of `output_dir` and renamed into place only when the check passed; then, with
    `push_to_hub`, the folder is uploaded as one commit (`seed_hf.push.push_folder`).

    Args:
        output_dir (`str` or `os.PathLike`): the SEED system folder to write.
        tokenizer_repo (`str`, *optional*, defaults to `"AILab-CVC/seed-tokenizer-2"`): repo with `seed_quantizer.pt`.
        llm_repo (`str`, *optional*, defaults to `"AILab-CVC/seed-llama-8b-sft"`): the SEED-LLaMA repo.
        unclip_repo (`str`, *optional*, defaults to `"stabilityai/stable-diffusion-2-1-unclip"`): the unCLIP pipeline.
        revision_tokenizer, revision_llm, revision_unclip (`str`, *optional*): branch, tag or commit of each repo.
        dtype (`str` or `torch.dtype`, *optional*): `"float32"`, `"float16"` or `"bfloat16"` for every part; by
            default each part keeps the dtype it is stored in (the SEED tokenizer and SEED-LLaMA release: float32).
        chat_template (`str`, *optional*): the processor's default chat template, `"vicuna"` or `"llama2"`; by
            default `"llama2"` for a 14B repo name, else `"vicuna"`.
        tokenizer_config (`SeedTokenizerConfig`, `dict` or path, *optional*): what tensor shapes cannot reveal
            (head counts, eps), a config or a JSON file in the reference schema; default: the release's values.
        tokenizer_reference (`str` or `os.PathLike`, *optional*): a folder with the authors' reference
            `inputs.safetensors` and `expected.safetensors`; the converted tokenizer must reproduce the codes.
        unclip_variant (`str`, *optional*): unCLIP weight variant to fetch and load (e.g. `"fp16"`).
        check_llm_parity (`bool`, *optional*, defaults to `True`): compare the logits of the release LLaMA and of
            the converted model on a prompt with an image (loads the release model once more).
        cache_dir (`str` or `os.PathLike`, *optional*), token (`str` or `bool`, *optional*),
        local_files_only (`bool`, *optional*, defaults to `False`): passed to `snapshot_download`.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `output_dir`.
        push_to_hub (`str`, *optional*): a Hub repo id to upload the folder to once written.
        private (`bool`, *optional*): with `push_to_hub`, create the repo private (`None`: the namespace default).

    Returns:
        `Path`: `output_dir`.

    Raises:
        `ValueError`: an argument is invalid (the message names it); [`ReleaseConversionError`] (a `ValueError`)
        when a repo cannot be fetched or lacks a file, or when the converted folder fails its check.
    """
    for name, value in (
        ("tokenizer_repo", tokenizer_repo),
        ("llm_repo", llm_repo),
        ("unclip_repo", unclip_repo),
    ):
        _validate_repo(name, value)
    if push_to_hub is not None:
        _validate_repo("push_to_hub", push_to_hub)
    torch_dtype = _resolve_dtype(dtype)
    chat_template = chat_template or _release_chat_template(llm_repo)
    if chat_template not in CHAT_TEMPLATES:
        raise ValueError(
            f"{argument_label('chat_template')} must be one of {', '.join(CHAT_TEMPLATES)}, got {chat_template!r}"
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"{argument_label('output_dir')} {output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"{argument_label('output_dir')} {output_dir} exists; pass overwrite=True (--overwrite) to replace it"
        )
    if isinstance(tokenizer_config, (str, os.PathLike)):
        path = Path(tokenizer_config)
        if not path.is_file():
            raise ValueError(f"{argument_label('tokenizer_config')} {path} is not a file")
        tokenizer_config = json.loads(path.read_text())
    if tokenizer_reference is not None:
        tokenizer_reference = Path(tokenizer_reference)
        absent = [
            n
            for n in ("inputs.safetensors", "expected.safetensors")
            if not (tokenizer_reference / n).is_file()
        ]
        if absent:
            raise ValueError(
                f"{argument_label('tokenizer_reference')} {tokenizer_reference} lacks {', '.join(absent)}"
            )

    from transformers import AutoTokenizer, LlamaForCausalLM

    import seed_hf  # noqa: F401  (registers the Auto classes)
    from seed_hf.checkpoint import save_seed_checkpoint
    from seed_hf.convert import convert_seed_tokenizer
    from seed_hf.convert_llama import convert_seed_llama
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM
    from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    steps = [*STEPS, "push"] if push_to_hub else list(STEPS)
    with tqdm(total=len(steps), desc="convert-release", unit="step") as progress:
        parity: dict[str, str] = {}

        def step(name: str) -> None:
            progress.set_postfix_str(name)
            logger.info("convert-release: %s", name)

        output_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{output_dir.name}.work.", dir=output_dir.parent) as work:
            work = Path(work)
            step("fetch")
            sources = fetch_release(
                work / "sources",
                tokenizer_repo=tokenizer_repo,
                llm_repo=llm_repo,
                unclip_repo=unclip_repo,
                revision_tokenizer=revision_tokenizer,
                revision_llm=revision_llm,
                revision_unclip=revision_unclip,
                unclip_variant=unclip_variant,
                cache_dir=cache_dir,
                token=token,
                local_files_only=local_files_only,
            )
            progress.update()

            step("convert tokenizer")
            visual_tokenizer = convert_seed_tokenizer(
                sources.tokenizer_dir / QUANTIZER_FILE, work / "visual_tokenizer", config=tokenizer_config
            )
            parity["tokenizer conversion"] = (
                f"{QUANTIZER_FILE} loaded strictly: every checkpoint tensor mapped once, every parameter filled "
                f"({visual_tokenizer.num_parameters():,} parameters)"
            )
            if tokenizer_reference is not None:
                parity.update(tokenizer_parity(visual_tokenizer, tokenizer_reference))
            if torch_dtype is not None:
                visual_tokenizer = visual_tokenizer.to(torch_dtype)
            progress.update()

            step("convert LLM")
            try:
                text_tokenizer = AutoTokenizer.from_pretrained(sources.llm_dir)
            except Exception as error:  # e.g. a sentencepiece tokenizer.model without its converter installed
                raise ReleaseConversionError(
                    f"cannot load the SEED-LLaMA text tokenizer of {sources.text_tokenizer_repo}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            parity_ids = parity_prompt_ids(
                text_tokenizer, visual_tokenizer.config.num_codes, visual_tokenizer.config.num_query_tokens
            )
            reference_logits = None
            if check_llm_parity:
                reference = LlamaForCausalLM.from_pretrained(sources.llm_dir, dtype="auto").eval()
                reference_dtype = reference.dtype
                with torch.no_grad():
                    reference_logits = reference(parity_ids).logits.float()
                del reference
            convert_seed_llama(
                sources.llm_dir,
                work / "llm",
                chat_template=chat_template,
                num_image_codes=visual_tokenizer.config.num_codes,
                tokens_per_image=visual_tokenizer.config.num_query_tokens,
            )
            model = SeedLlamaForCausalLM.from_pretrained(work / "llm", dtype=torch_dtype or "auto").eval()
            model_dtype = model.dtype
            processor = SeedLlamaProcessor.from_pretrained(work / "llm")
            # the LLM's image processor feeds the visual tokenizer: same size and normalisation
            size = visual_tokenizer.config.image_size
            processor.image_processor = SeedImageProcessor(
                size={"height": size, "width": size},
                image_mean=list(visual_tokenizer.config.image_mean),
                image_std=list(visual_tokenizer.config.image_std),
            )
            progress.update()

            step("assemble de-tokenizer")
            unclip_kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
            if unclip_variant:
                unclip_kwargs["variant"] = unclip_variant
            detokenizer = SeedUnCLIPPipeline.from_unclip(
                sources.unclip_dir, visual_tokenizer, **unclip_kwargs
            )
            progress.update()

            step("save")
            # built under its final name inside the work folder; moved into place once checked and carded
            built = work / "system" / output_dir.name
            built.parent.mkdir()
            save_seed_checkpoint(built, model, processor, visual_tokenizer, detokenizer)
            del model, detokenizer
            progress.update()

            step("check")
            # the weights keep their values when they keep their dtype: then the logits must agree
            strict = reference_logits is not None and reference_dtype == model_dtype
            parity.update(check_folder(built, parity_ids, reference_logits, strict_llm_parity=strict))
            if reference_logits is not None:
                parity[LLM_PARITY_KEY] += (
                    f"; release {_dtype_name(reference_dtype)}, converted {_dtype_name(model_dtype)}"
                )
            progress.update()

            step("cards")
            from seed_hf.model_cards import write_converted_cards

            write_converted_cards(
                built,
                tokenizer_repo=tokenizer_repo,
                llm_repo=llm_repo,
                unclip_repo=unclip_repo,
                parity=parity,
                repo_id=push_to_hub,
            )
            with staged_directory(output_dir) as staging:  # replaces an existing output_dir only now
                staging.rmdir()
                built.rename(staging)
            progress.update()

        if push_to_hub:
            step("push")
            from seed_hf.push import push_folder

            push_folder(
                output_dir, push_to_hub, private=private, token=token if isinstance(token, str) else None
            )
            progress.update()
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seed-hf convert-release",
        description="Convert the official SEED release (SEED tokenizer, SEED-LLaMA, unCLIP Stable Diffusion) into one "
        "complete SEED system folder: fetch only the needed files, convert, check that it loads, write the cards.",
    )
    parser.add_argument(
        "--tokenizer", default=RELEASE_TOKENIZER_REPO, help="Hub repo with the authors' seed_quantizer.pt"
    )
    parser.add_argument("--llm", default=RELEASE_LLM_REPO, help="Hub repo of the SEED-LLaMA checkpoint")
    parser.add_argument(
        "--unclip", default=RELEASE_UNCLIP_REPO, help="Hub repo of the unCLIP Stable Diffusion pipeline"
    )
    parser.add_argument("--output-dir", required=True, help="the SEED system folder to write")
    parser.add_argument("--revision-tokenizer", help="branch, tag or commit of --tokenizer")
    parser.add_argument("--revision-llm", help="branch, tag or commit of --llm")
    parser.add_argument("--revision-unclip", help="branch, tag or commit of --unclip")
    parser.add_argument(
        "--dtype",
        choices=[*DTYPES, "auto"],
        default="auto",
        help="dtype of every part; auto: keep each part's stored dtype (float32 in the SEED release)",
    )
    parser.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATES,
        help="default chat template; by default llama2 for a 14B repo name, vicuna otherwise",
    )
    parser.add_argument(
        "--tokenizer-config",
        help="JSON in the reference schema with what shapes cannot reveal (head counts, eps); default: the release's",
    )
    parser.add_argument(
        "--tokenizer-reference",
        help="folder with the authors' inputs.safetensors + expected.safetensors; the converted codes must match",
    )
    parser.add_argument("--unclip-variant", help="unCLIP weight variant to fetch and load, e.g. fp16")
    parser.add_argument(
        "--skip-llm-parity",
        action="store_true",
        help="do not compare the release and converted LLM logits (saves loading the release model once more)",
    )
    parser.add_argument("--cache-dir", help="Hugging Face cache folder (default: the standard cache)")
    parser.add_argument("--token", help="Hub token (default: the stored login)")
    parser.add_argument(
        "--local-files-only", action="store_true", help="use the cache only, never the network"
    )
    add_output_arguments(parser, "--output-dir")
    args = parser.parse_args(argv)
    try:
        folder = convert_release(
            args.output_dir,
            tokenizer_repo=args.tokenizer,
            llm_repo=args.llm,
            unclip_repo=args.unclip,
            revision_tokenizer=args.revision_tokenizer,
            revision_llm=args.revision_llm,
            revision_unclip=args.revision_unclip,
            dtype=args.dtype,
            chat_template=args.chat_template,
            tokenizer_config=args.tokenizer_config,
            tokenizer_reference=args.tokenizer_reference,
            unclip_variant=args.unclip_variant,
            check_llm_parity=not args.skip_llm_parity,
            cache_dir=args.cache_dir,
            token=args.token,
            local_files_only=args.local_files_only,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
            private=args.private or None,
        )
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"seed-hf convert-release: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {folder}")
    return 0


__all__ = ["ReleaseConversionError", "ReleaseSources", "convert_release", "fetch_release"]
