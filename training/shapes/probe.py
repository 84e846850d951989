"""`seed-hf probe-shapes`: where a SEED-Shapes checkpoint fails to compose unseen attribute combinations, stage by
stage (issue #20, step 1).

The 97 unseen combinations (`world.unseen_combinations`) never occur in any training data. Each stage is
measured on them and, as the reference, on seen combinations:

1. **tokenizer** (`tokenizer`): every one of the 972 renders is encoded. Per attribute, a linear probe
   (`probe_measures.linear_probe_predictions`) on each feature set of `FEATURE_SETS` is trained on the 875
   seen images and scored on the 97 unseen (`unseen`), and, as the reference, cross-validated over the seen
   images (`seen_heldout`, `SEEN_FOLDS` folds: combinations new to the probe, not to the tokenizer). The
   codes: unseen sequences equal to a seen image's (collisions), the overlap with the nearest seen sequence
   per position, and with the seen images that differ in one attribute (the same for seen images against the
   other seen images); and how far each image's codes equal the sequence assembled from the seen images' codes
   attribute by attribute (`assembled`: 100% for attribute-wise codes), and per attribute how pure the seen
   images' codes at its positions are and how many codes a value gets there (`purity`: 1 and 1 for
   attribute-wise codes);
2. **decoder** (`decoder`): reconstructions image -> codes -> de-tokenizer of `--num-samples` images of
   each split (chosen as `evaluate-shapes` chooses them, so the figures are its `reconstruction`), per
   attribute and by which attributes are wrong; and the same from the generation embedding of the
   *unquantized* code-space projections (the codebook bypassed), to tell quantization from decoding. An
   unseen reconstruction that is wrong is checked against the seen combination with the nearest codes and
   the one with the nearest *training input* (the de-tokenizer was trained on the 875 seen images' generation
   embeddings only);
3. **LLM** (`llm`): the held-out captions of `evaluate-shapes`' text-to-image (same texts and seeds, the shipped
   sampling, constrained decoding): whether each drawn code sequence copies a seen image's sequence, its
   distance to the nearest seen sequence and to the true image's codes, the attributes shared with the copied
   combination; and the LLM's next-code accuracy and log-probability with the true codes given (teacher
   forcing), against the same of its own drawn sequence;
4. **reader** (`reader`): the shape confidences (`1 - e1 / e2` of the two best fits) with which the reader
   accepts the shapes of the drawings, and a sweep of the rule that makes a shape unreadable under a confidence
   floor, calibrated on exact renders of all 972 combinations and on degraded renders (`DEGRADATIONS`), with the
   text-to-image and reconstruction figures each floor would give. The reader applies the floor
   `MIN_SHAPE_CONFIDENCE` itself, so floors under it change nothing; the sweep checks that it is still the
   highest floor the renders allow (`proposed_floor`).

With `--tokenizer DIR` (a visual tokenizer folder, e.g. a `train-shapes` run's `tokenizer_stage2`) only the
tokenizer section is measured, plus, with `--teacher` (the run's `teacher`), how the generation embedding matches
the teacher's embedding of each image (`generation_targets`), from the image's own codes and from the sequence
assembled attribute by attribute from seen images' codes (`assembled_codes`): a tokenizer design can be compared
without training a decoder and an LLM on it. `--oracle-head-steps N` adds an upper bound: a generation head trained
from scratch on perfectly attribute-wise codes against one trained the same way on the tokenizer's own codes.
`--llm DIR` (with `--teacher`) adds what an LLM pre-trained on the tokenizer's codes (a run's `llm_full`) writes for
captions, read without SFT or decoder: the attributes its codes stand for and their generation embedding
(`llm_codes`).

Writes `OUTPUT/probe.json` (every figure), `OUTPUT/probe.md` (the tables) and `OUTPUT/probe.png` (a grid:
unseen truths, their reconstructions, the nearest seen code sequence's combination; unseen captions'
drawings and the combinations they copy; the seen drawings with the least confident accepted squares and
triangles).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from seed_hf.io_utils import write_text_atomically
from seed_hf.logging_utils import get_logger

from . import records, world
from .evaluate import (
    ANSWER_TOKENS,
    SHAPES_DECODER_SETTINGS,
    SPLITS,
    _drawn_image_readings,
    load_shapes_pipelines,
    make_grid,
)
from .probe_measures import (
    PROBE_WEIGHT_DECAY,
    agreement_with_targets,
    assembled_codes,
    attribute_labels,
    attributes_read_from_codes,
    code_neighbourhood,
    code_purity,
    cross_validated_probe,
    embedding_agreement,
    error_breakdown,
    floor_sweep,
    hamming_distances,
    highest_floor,
    one_hot_codes,
    oracle_attribute_codes,
    probe_attributes,
    reading_combination,
    shape_confidence_quantiles,
    shape_confusion,
    shared_attributes,
)
from .probe_report import format_report
from .reader import MIN_SHAPE_CONFIDENCE, attribute_accuracy, degrade, read_attributes

logger = get_logger(__name__)

PROBE_FILE, REPORT_FILE, GRID_FILE = "probe.json", "probe.md", "probe.png"
# the representations of an image the linear probes read, from the causal Q-Former to the de-tokenizer's input
FEATURE_SETS = {
    "causal_embeddings": "the causal Q-Former's 32 query outputs, flattened",
    "causal_last_query": "the last causal query's output (SEED's image embedding for retrieval)",
    "code_space": "the 32 projections to code space before quantization, flattened",
    "quantized": "the 32 codebook vectors of the codes, flattened",
    "codes_one_hot": "the 32 codes, one-hot per position",
    "generation_embeddings": "the generation embedding decoded from the codes (the de-tokenizer's input)",
    "unquantized_generation_embeddings": "the generation embedding of the code-space projections, unquantized",
}
# the seen reference of the probes: each fifth of the seen images predicted by probes trained on the others
SEEN_FOLDS = 5
# the reader's own robustness test (tests/test_shapes.py): noise, blur, JPEG and a colour shift; and a render
# brought to 16x16 and back (a blurry small decoder)
DEGRADATIONS = {
    "noisy_blurred_jpeg": {"noise_std": 20.0, "blur_radius": 1.0, "jpeg_quality": 75, "color_shift": 12.0},
    "low_resolution": None,
}
SHAPE_FLOORS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
# a degraded render set may lose at most this much of its shape accuracy to the proposed floor
MAX_DEGRADED_LOSS = 0.005
GRID_SAMPLES = 8
LOW_CONFIDENCE_LISTED = 12


def _low_resolution(image: Image.Image) -> Image.Image:
    small = image.resize((16, 16), Image.Resampling.BOX)
    return small.resize((world.IMAGE_SIZE, world.IMAGE_SIZE), Image.Resampling.BICUBIC)


@torch.no_grad()
def encode_world(visual_tokenizer, image_processor) -> dict[str, torch.Tensor]:
    """Every representation of `FEATURE_SETS` (and `codes`, `unquantized_generation_embeddings`) of the 972
    renders by a `SeedTokenizerModel`, row i being combination i, with the `pixel_values` it read."""
    images = [world.render(index) for index in range(world.NUM_COMBINATIONS)]
    pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
    causal = visual_tokenizer.causal_embeddings(pixel_values.to(visual_tokenizer.dtype)).float()
    codes, code_space = visual_tokenizer.quantize(causal.to(visual_tokenizer.dtype))
    unquantized = visual_tokenizer.generation_embeddings_from_upsampled(
        visual_tokenizer.decode_task_layer(code_space)
    )
    return {
        "causal_embeddings": causal,
        "causal_last_query": causal[:, -1],
        "code_space": code_space.float(),
        "quantized": visual_tokenizer.codebook(codes).float(),
        "codes_one_hot": torch.from_numpy(one_hot_codes(codes, visual_tokenizer.config.num_codes)),
        "generation_embeddings": visual_tokenizer.decode(codes).float(),
        "codes": codes,
        "unquantized_generation_embeddings": unquantized.float(),
        "pixel_values": pixel_values,
    }


def probe_tokenizer(encoded: dict[str, torch.Tensor], seed: int) -> dict[str, Any]:
    """The tokenizer section of a probe (see the module docstring) from [`encode_world`]'s output."""
    seen, unseen = np.array(world.seen_combinations()), np.array(world.unseen_combinations())
    combinations = np.arange(world.NUM_COMBINATIONS)
    probes = {}
    for name in FEATURE_SETS:
        features = encoded[name].numpy()
        probes[name] = {
            "dimensions": int(np.prod(features.shape[1:])),
            "unseen": probe_attributes(features, combinations, seen, unseen),
            "seen_heldout": cross_validated_probe(features, combinations, seen, SEEN_FOLDS, seed),
        }
        logger.info("probe-shapes: linear probes on %s done", name)
    codes = encoded["codes"].numpy()
    seen_codes = codes[seen]
    seen_reference = code_neighbourhood(seen_codes, seen, seen_codes, seen, True)
    seen_reference.pop("nearest")
    assembled = assembled_codes(codes, seen)
    return {
        "linear_probes": probes,
        "codes": {
            "distinct_sequences": {
                "seen": len(np.unique(seen_codes, axis=0)),
                "unseen": len(np.unique(codes[unseen], axis=0)),
            },
            "codes_in_use": len(np.unique(codes)),
            "unseen_vs_seen": code_neighbourhood(codes[unseen], unseen, seen_codes, seen),
            "seen_vs_other_seen": seen_reference,
            "assembled": {
                split: {
                    "positions_equal": float((assembled[rows] == codes[rows]).mean()),
                    "sequences_equal": float((assembled[rows] == codes[rows]).all(1).mean()),
                }
                for split, rows in (("seen", seen), ("unseen", unseen))
            },
            "purity": code_purity(codes, seen),
        },
    }


@torch.no_grad()
def probe_generation_targets(
    visual_tokenizer, encoded: dict[str, torch.Tensor], teacher_embeds: torch.Tensor
) -> dict[str, Any]:
    """How the generation embedding the de-tokenizer is fed matches the teacher's embedding of the image it should
    draw ([`probe_measures.embedding_agreement`]), from the image's own codes and from the sequence assembled
    attribute by attribute from seen images' codes (`assembled_codes`: what a composing LLM could write)."""
    seen, unseen = np.array(world.seen_combinations()), np.array(world.unseen_combinations())
    codes = encoded["codes"]
    assembled = torch.from_numpy(assembled_codes(codes, seen)).to(codes.device)
    sources = {
        "own_codes": encoded["generation_embeddings"],
        "assembled_codes": visual_tokenizer.decode(assembled).float(),
    }
    return {
        source: {
            split: embedding_agreement(embeddings, teacher_embeds, rows)
            for split, rows in (("seen", seen), ("unseen", unseen))
        }
        for source, embeddings in sources.items()
    }


# the parts of a SeedTokenizerModel between codes and generation embedding (the de-tokenizer's input)
GENERATION_HEAD_PARTS = (
    "codebook",
    "decode_task_layer",
    "generation_blocks",
    "generation_head",
    "generation_projection",
    "reverse_query_tokens",
    "reverse_qformer",
)


def probe_oracle_generation_head(
    config, codes: torch.Tensor, teacher_embeds: torch.Tensor, steps: int, seed: int = 0
) -> dict[str, Any]:
    """
    An upper bound for attribute-wise codes: a fresh generation head (the `GENERATION_HEAD_PARTS` of a
    `SeedTokenizerModel` of `config`, as tokenizer stage 2 trains them: MSE to the teacher's embedding, AdamW
    lr 1e-3, cosine, batches of 64) trained for `steps` on the 875 seen images from `oracle_attribute_codes`, and,
    as the reference, one trained the same way from the tokenizer's own `codes`; each scored with
    [`probe_measures.embedding_agreement`] on seen and unseen images.
    """
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    seen, unseen = np.array(world.seen_combinations()), np.array(world.unseen_combinations())
    oracle = torch.from_numpy(oracle_attribute_codes(codes.shape[1]))
    # a codebook with room for the oracle's codes too (a smoke-sized tokenizer may have fewer)
    config = copy.deepcopy(config)
    config.num_codes = max(config.num_codes, int(oracle.max()) + 1)
    results = {}
    for source, source_codes in (("oracle_attribute_codes", oracle), ("own_codes", codes)):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        head = SeedTokenizerModel(config)
        trained = [
            parameter
            for name, parameter in head.named_parameters()
            if name.split(".")[0] in GENERATION_HEAD_PARTS
        ]
        optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.05)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            rows = torch.from_numpy(rng.choice(seen, 64))
            loss = torch.nn.functional.mse_loss(head.decode(source_codes[rows]), teacher_embeds[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            embeddings = head.decode(source_codes)
        results[source] = {
            split: embedding_agreement(embeddings, teacher_embeds, rows)
            for split, rows in (("seen", seen), ("unseen", unseen))
        }
    return {"steps": steps, **results}


@torch.no_grad()
def probe_llm_codes(
    llm_dir: str | os.PathLike,
    visual_tokenizer,
    encoded: dict[str, torch.Tensor],
    teacher_embeds: torch.Tensor,
    num_samples: int,
    seed: int = 0,
) -> dict[str, Any]:
    """
    What an LLM trained on the tokenizer's codes (`train-shapes`' `llm_full`, before instruction tuning) writes
    for captions, with neither SFT nor decoder involved. For `num_samples` seen and unseen combinations (at most
    all of a split), one caption each (`texts.make_caption`), prompted as the pre-training data writes a
    caption-first pair (`<s>`, the caption, `<img>`), 32 codes drawn greedily under
    `SeedImageConstraintLogitsProcessor`; then, per split: every attribute read from the drawn codes
    ([`probe_measures.attributes_read_from_codes`]), the generation embedding decoded from them against the
    teacher's of the asked image ([`probe_measures.agreement_with_targets`]), and how often the drawn sequence is
    the image's own or copies a seen image's.
    """
    from transformers import AutoTokenizer, LogitsProcessorList

    from seed_hf.modeling.generation_seed_llama import (
        SeedImageConstraintLogitsProcessor,
        SeedImageTokenLayout,
    )
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM

    from .texts import make_caption

    model = SeedLlamaForCausalLM.from_pretrained(llm_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    layout = SeedImageTokenLayout.from_config(model.config)
    num_codes = visual_tokenizer.config.num_codes
    if layout.num_image_codes != num_codes or layout.tokens_per_image != encoded["codes"].shape[1]:
        raise ValueError(
            f"the LLM in {llm_dir} writes {layout.num_image_codes} image codes, {layout.tokens_per_image} per image; "
            f"the visual tokenizer has {num_codes} codes, {encoded['codes'].shape[1]} per image"
        )
    codes = encoded["codes"].numpy()
    seen, unseen = np.array(world.seen_combinations()), np.array(world.unseen_combinations())
    seen_sequences = {tuple(row) for row in codes[seen]}
    rng = np.random.default_rng(seed)
    results = {}
    for split, candidates in (("seen", seen), ("unseen", unseen)):
        combinations = rng.choice(candidates, min(num_samples, len(candidates)), replace=False)
        prompts = [
            [
                tokenizer.bos_token_id,
                *tokenizer(make_caption(int(index), rng), add_special_tokens=False).input_ids,
            ]
            + [layout.boi_token_id]
            for index in combinations
        ]
        drawn = np.zeros((len(combinations), layout.tokens_per_image), dtype=np.int64)
        # prompts of one length form a batch: no padding, so a row draws what it would alone
        for length in sorted({len(prompt) for prompt in prompts}):
            rows = [row for row, prompt in enumerate(prompts) if len(prompt) == length]
            constraint = SeedImageConstraintLogitsProcessor(
                layout, prompt_length=length, max_length=length + layout.tokens_per_image + 1
            )
            generated = model.generate(
                input_ids=torch.tensor([prompts[row] for row in rows]),
                max_new_tokens=layout.tokens_per_image + 1,
                do_sample=False,
                logits_processor=LogitsProcessorList([constraint]),
            )
            drawn[rows] = (
                generated[:, length : length + layout.tokens_per_image].numpy() - layout.image_code_start_id
            )
        read = attributes_read_from_codes(drawn, codes, seen)
        correct = read == attribute_labels(combinations)
        embeddings = visual_tokenizer.decode(torch.from_numpy(drawn)).float()
        results[split] = {
            "count": len(combinations),
            "attributes_from_codes": {
                **{
                    name: float(correct[:, column].mean())
                    for column, name in enumerate(world.ATTRIBUTE_NAMES)
                },
                "all": float(correct.all(1).mean()),
            },
            "generation_embedding": agreement_with_targets(embeddings, teacher_embeds, combinations),
            "own_codes": float((drawn == codes[combinations]).all(1).mean()),
            "own_codes_per_position": float((drawn == codes[combinations]).mean()),
            "copies_a_seen_sequence": float(np.mean([tuple(row) in seen_sequences for row in drawn])),
        }
    return results


def probe_tokenizer_folder(
    tokenizer_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    teacher_dir: str | os.PathLike | None = None,
    seed: int = 0,
    oracle_head_steps: int = 0,
    llm_dir: str | os.PathLike | None = None,
    num_samples: int = 100,
) -> dict[str, Any]:
    """
    The tokenizer section alone, for a visual tokenizer folder (`train-shapes`' `tokenizer_stage2`, or a
    checkpoint's `visual_tokenizer/`), plus the generation embedding against a CLIP teacher (`train-shapes`'
    `teacher/`, the embedding tokenizer stage 2 regressed) when `teacher_dir` is given, with
    `oracle_head_steps` the [`probe_oracle_generation_head`] upper bound, and with `llm_dir` (an LLM trained on
    this tokenizer's codes) the codes it writes for `num_samples` captions per split ([`probe_llm_codes`]).
    Writes `probe.json` and `probe.md` into `output_dir`; returns the results.
    """
    if llm_dir is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(
            f"`num_samples` must be a positive int (captions per split for `llm_dir`), got {num_samples!r}"
        )
    for name, value in (("oracle_head_steps", oracle_head_steps), ("llm_dir", llm_dir)):
        if value and teacher_dir is None:
            raise ValueError(
                f"`{name}` needs `teacher_dir`: its figures compare with the teacher's embeddings"
            )
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    from ..tokenizer_stages import load_clip_tower

    start = time.perf_counter()
    visual_tokenizer = SeedTokenizerModel.from_pretrained(tokenizer_dir).eval()
    image_processor = SeedImageProcessor.from_pretrained(tokenizer_dir)
    encoded = encode_world(visual_tokenizer, image_processor)
    results: dict[str, Any] = {
        "model": str(tokenizer_dir),
        "settings": {"seed": seed, "probe_weight_decay": PROBE_WEIGHT_DECAY, "seen_folds": SEEN_FOLDS},
        "tokenizer": probe_tokenizer(encoded, seed),
    }
    if teacher_dir is not None:
        results["teacher"] = str(teacher_dir)
        teacher = load_clip_tower(str(teacher_dir), "vision").eval()
        with torch.no_grad():
            # the teacher sees the tokenizer's pixels, as in tokenizer stage 2
            teacher_embeds = teacher(pixel_values=encoded["pixel_values"]).image_embeds.float()
        results["generation_targets"] = probe_generation_targets(visual_tokenizer, encoded, teacher_embeds)
        if oracle_head_steps:
            results["oracle_generation_head"] = probe_oracle_generation_head(
                visual_tokenizer.config, encoded["codes"], teacher_embeds, oracle_head_steps, seed
            )
        if llm_dir is not None:
            results["llm"] = str(llm_dir)
            results["llm_codes"] = probe_llm_codes(
                llm_dir, visual_tokenizer, encoded, teacher_embeds, num_samples, seed
            )
    results["stage_times_s"] = {"tokenizer": round(time.perf_counter() - start, 1)}
    _write_results(results, Path(output_dir))
    return results


def _write_results(results: dict[str, Any], output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(output_dir / PROBE_FILE, json.dumps(results, indent=2) + "\n")
    write_text_atomically(output_dir / REPORT_FILE, format_report(results))


class CompositionProbe:
    """
    Measures one SEED-Shapes checkpoint stage by stage (see the module docstring).

    Args:
        model_dir: a SEED-Shapes checkpoint folder (`models/seed-shapes`, or `RUN/seed_shapes` of `train-shapes`).
        num_samples: held-out captions per split (LLM) and images per split (decoder; at most 97 unseen).
        seed: seed of the held-out samples, of sampling and of the probes' seen split.
        batch_size: generation batch size.
    """

    def __init__(
        self, model_dir: str | os.PathLike, num_samples: int = 100, seed: int = 0, batch_size: int = 25
    ):
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(
                f"`model_dir` must be a SEED checkpoint folder (config.json), got {str(model_dir)!r}"
            )
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.text_to_image, _ = load_shapes_pipelines(self.model_dir)
        self.seen = np.array(world.seen_combinations())
        self.unseen = np.array(world.unseen_combinations())
        self.grid_rows: list[tuple[str, list[Any]]] = []

    # ----------------------------------------------------------------------------------------------- stages
    def encode_world(self) -> dict[str, torch.Tensor]:
        return encode_world(
            self.text_to_image.model.visual_tokenizer, self.text_to_image.processor.image_processor
        )

    def probe_tokenizer(self, encoded: dict[str, torch.Tensor]) -> dict[str, Any]:
        return probe_tokenizer(encoded, self.seed)

    def _split_indices(self, split: str) -> np.ndarray:
        # as `ShapesEvaluator._split_images` chooses them: these reconstructions are `evaluate-shapes`' own
        combinations = np.array(world.split_combinations(split))
        rng = np.random.default_rng(self.seed)
        count = min(self.num_samples, len(combinations))
        return combinations[np.sort(rng.choice(len(combinations), count, replace=False))]

    @torch.no_grad()
    def _decode(self, image_embeds: torch.Tensor) -> list[Image.Image]:
        # given codes, the de-tokenizer decodes them to these very embeddings first: codes and unquantized
        # embeddings take one path (the test checks the figures against `evaluate-shapes`' decoding of codes)
        return self.text_to_image.detokenizer(
            image_embeds=image_embeds,
            generator=torch.Generator().manual_seed(self.seed),
            num_inference_steps=SHAPES_DECODER_SETTINGS["num_inference_steps"],
            guidance_scale=SHAPES_DECODER_SETTINGS["decoder_guidance_scale"],
        ).images

    def probe_decoder(
        self, encoded: dict[str, torch.Tensor], nearest_seen: dict[int, int]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The decoder stage's figures, and the readings of the reconstructions from codes (for the reader's)."""
        result, reconstructions = {}, {}
        # the de-tokenizer was trained on exactly these 875 inputs: the seen images' embeddings from their codes
        training_inputs = encoded["generation_embeddings"][self.seen]
        for split in SPLITS:
            indices = self._split_indices(split)
            result[split] = {"combinations": len(indices)}
            for source, embeddings in (
                ("from_codes", encoded["generation_embeddings"][indices]),
                ("from_unquantized", encoded["unquantized_generation_embeddings"][indices]),
            ):
                images = self._decode(image_embeds=embeddings)
                readings = [read_attributes(image) for image in images]
                figures = {
                    "accuracy": attribute_accuracy(readings, list(indices)),
                    "errors": error_breakdown(readings, indices, self.seen),
                }
                if split == "test_unseen":
                    drawn = [reading_combination(reading) for reading in readings]
                    nearest_input = self.seen[torch.cdist(embeddings, training_inputs).argmin(1).numpy()]
                    figures["reads_as_nearest_code_neighbour"] = sum(
                        combination == nearest_seen[int(index)]
                        for combination, index in zip(drawn, indices, strict=True)
                    )
                    figures["reads_as_nearest_training_input"] = sum(
                        combination == int(nearest)
                        for combination, nearest in zip(drawn, nearest_input, strict=True)
                    )
                    figures["nearest_training_input_shares_attributes"] = np.bincount(
                        shared_attributes(indices, nearest_input).diagonal(), minlength=7
                    ).tolist()
                    self.grid_rows.append((f"unseen: decoded {source[5:]}", images[:GRID_SAMPLES]))
                result[split][source] = figures
                if source == "from_codes":
                    reconstructions[split] = {"readings": readings, "targets": indices}
            logger.info("probe-shapes: decoder on %s done", split)
        shown = self._split_indices("test_unseen")[:GRID_SAMPLES]
        self.grid_rows = [
            ("unseen: truth", [world.render(index) for index in shown]),
            *self.grid_rows,
            ("unseen: nearest seen codes", [world.render(nearest_seen[int(index)]) for index in shown]),
        ]
        return result, reconstructions

    @torch.no_grad()
    def _code_log_probs(
        self, prompts: Sequence[str], code_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: per prompt and position, the log-probability of the given code among the codes (the
        constrained decoding's choice set) after the prompt, `<img>` and the earlier codes, and whether it is
        the most probable code. `code_rows` is `[len(prompts), K, 32]`: K sequences per prompt."""
        model, processor = self.text_to_image.model, self.text_to_image.processor
        layout = model.image_token_layout
        code_ids = slice(layout.image_code_start_id, layout.image_code_end_id)
        log_probs, best = [], []
        for prompt, sequences in zip(prompts, code_rows, strict=True):
            prompt_ids = processor.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=True, return_dict=True, return_tensors="pt"
            )["input_ids"]
            start = prompt_ids.shape[1]
            ids = torch.cat(
                [
                    prompt_ids.expand(len(sequences), -1),
                    torch.full((len(sequences), 1), layout.boi_token_id),
                    sequences + layout.image_code_start_id,
                ],
                dim=1,
            )
            scores = model(input_ids=ids).logits[:, start : start + sequences.shape[1], code_ids].float()
            scores = scores.log_softmax(-1)
            log_probs.append(scores.gather(-1, sequences[..., None])[..., 0])
            best.append(scores.argmax(-1) == sequences)
        return torch.stack(log_probs), torch.stack(best)

    def probe_llm(self, encoded: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The LLM stage's figures, and the drawings (readings, images, prompts, targets) for the reader's."""
        codes = encoded["codes"]
        result, drawings = {}, {}
        for split in SPLITS:
            rows = records.caption_dataset(split, self.num_samples, seed=self.seed)
            prompts, targets = list(rows["text"]), np.array(rows["combination"])
            outputs = self.text_to_image(
                prompts,
                seed=self.seed,
                batch_size=self.batch_size,
                max_new_tokens=self.text_to_image.model.config.tokens_per_image + ANSWER_TOKENS,
                **SHAPES_DECODER_SETTINGS,
            )
            readings, images = _drawn_image_readings(outputs)
            # constrained decoding: every answer opens with one complete image
            generated = torch.stack([output["image_codes"][0] for output in outputs])
            true_codes = codes[targets]
            to_seen = hamming_distances(generated, codes[self.seen])
            nearest = self.seen[to_seen.argmin(1)]
            nearest_distance = to_seen.min(1)
            to_true = (generated != true_codes).numpy()
            first_difference = np.where(to_true.any(1), to_true.argmax(1), to_true.shape[1])
            shares = shared_attributes(targets, nearest).diagonal()
            log_probs, best = self._code_log_probs(prompts, torch.stack([true_codes, generated], dim=1))
            drawn_combinations = [reading_combination(reading) for reading in readings]
            result[split] = {
                "count": len(prompts),
                "text_to_image": attribute_accuracy(readings, list(targets)),
                "copies_a_seen_sequence": int((nearest_distance == 0).sum()),
                "equals_true_codes": int((~to_true.any(1)).sum()),
                "distance_to_nearest_seen": np.bincount(nearest_distance, minlength=33).tolist(),
                "mean_distance_to_nearest_seen": float(nearest_distance.mean()),
                "mean_distance_to_true_codes": float(to_true.sum(1).mean()),
                "mean_first_difference_from_true_codes": float(first_difference.mean()),
                "nearest_seen_shares_attributes": np.bincount(shares, minlength=7).tolist(),
                "copy_shares_attributes": np.bincount(shares[nearest_distance == 0], minlength=7).tolist(),
                "nearest_seen_differs_in": dict(
                    zip(
                        world.ATTRIBUTE_NAMES,
                        (attribute_labels(targets) != attribute_labels(nearest)).sum(0).tolist(),
                        strict=True,
                    )
                ),
                "drawing_reads_as_nearest_seen": int(
                    sum(drawn == int(copy) for drawn, copy in zip(drawn_combinations, nearest, strict=True))
                ),
                "teacher_forced": {
                    "true_codes_next_code_accuracy": float(best[:, 0].float().mean()),
                    "true_codes_all_32_most_probable": int(best[:, 0].all(1).sum()),
                    "true_codes_accuracy_by_position": best[:, 0].float().mean(0).round(decimals=3).tolist(),
                    "true_codes_mean_log_prob": float(log_probs[:, 0].mean()),
                    "drawn_codes_mean_log_prob": float(log_probs[:, 1].mean()),
                    "drawn_more_probable_than_true": int(
                        (log_probs[:, 1].sum(1) > log_probs[:, 0].sum(1)).sum()
                    ),
                },
            }
            drawings[split] = {"readings": readings, "images": images, "prompts": prompts, "targets": targets}
            if split == "test_unseen":
                self.grid_rows += [
                    ("unseen caption: truth", [world.render(index) for index in targets[:GRID_SAMPLES]]),
                    ("unseen caption: drawing", images[:GRID_SAMPLES]),
                    (
                        "drawing: nearest seen codes",
                        [world.render(index) for index in nearest[:GRID_SAMPLES]],
                    ),
                ]
            logger.info("probe-shapes: LLM on %s done", split)
        return result, drawings

    def probe_reader(self, drawings: dict[str, Any], reconstructions: dict[str, Any]) -> dict[str, Any]:
        combinations = list(range(world.NUM_COMBINATIONS))
        rng = np.random.default_rng(self.seed)
        calibration = {"exact": [read_attributes(world.render(index)) for index in combinations]}
        for name, settings in DEGRADATIONS.items():
            calibration[name] = [
                read_attributes(
                    _low_resolution(world.render(index))
                    if settings is None
                    else degrade(world.render(index), rng, **settings)
                )
                for index in combinations
            ]
        reading_sets = {name: (readings, combinations) for name, readings in calibration.items()}
        for split in SPLITS:
            for task, source in (("text_to_image", drawings), ("reconstruction", reconstructions)):
                reading_sets[f"{split} {task}"] = (source[split]["readings"], source[split]["targets"])
        sweep = floor_sweep(reading_sets, SHAPE_FLOORS)
        seen = drawings["test_seen"]
        accepted = [
            (reading["confidence"]["shape"], row)
            for row, reading in enumerate(seen["readings"])
            if reading["shape"] in ("square", "triangle")
        ]
        accepted.sort(key=lambda item: item[0])
        self.grid_rows.append(
            (
                "seen drawings: least sure squares/triangles",
                [seen["images"][row] for _, row in accepted[:GRID_SAMPLES]],
            )
        )
        return {
            "calibration_confidence": {
                name: {
                    shape: shape_confidence_quantiles(readings, combinations, shape) for shape in world.SHAPES
                }
                for name, readings in calibration.items()
            },
            "drawn_shape_confidence": {
                split: {
                    shape: shape_confidence_quantiles(
                        drawings[split]["readings"], drawings[split]["targets"], shape
                    )
                    for shape in world.SHAPES
                }
                for split in SPLITS
            },
            "drawn_shape_confusion": {
                split: shape_confusion(drawings[split]["readings"], drawings[split]["targets"])
                for split in SPLITS
            },
            "least_sure_accepted_squares_triangles": [
                {
                    "prompt": seen["prompts"][row],
                    "asked": world.ShapeAttributes.from_index(int(seen["targets"][row])).key,
                    "read_shape": seen["readings"][row]["shape"],
                    "shape_confidence": round(confidence, 4),
                }
                for confidence, row in accepted[:LOW_CONFIDENCE_LISTED]
            ],
            "floor_sweep": sweep,
            "reader_floor": MIN_SHAPE_CONFIDENCE,
            "proposed_floor": highest_floor(sweep, "exact", tuple(DEGRADATIONS), MAX_DEGRADED_LOSS),
            "highest_floor_by_degradation": {
                name: highest_floor(sweep, "exact", (name,), MAX_DEGRADED_LOSS) for name in DEGRADATIONS
            },
        }

    # ----------------------------------------------------------------------------------------------- all
    def run(self, output_dir: str | os.PathLike) -> dict[str, Any]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        start, times = time.perf_counter(), {}

        def lap(name: str) -> None:
            times[name] = round(time.perf_counter() - start - sum(times.values()), 1)

        encoded = self.encode_world()
        tokenizer = self.probe_tokenizer(encoded)
        lap("tokenizer")
        nearest_seen = {
            int(index): entry["combination"]
            for index, entry in zip(self.unseen, tokenizer["codes"]["unseen_vs_seen"]["nearest"], strict=True)
        }
        decoder, reconstructions = self.probe_decoder(encoded, nearest_seen)
        lap("decoder")
        llm, drawings = self.probe_llm(encoded)
        lap("llm")
        reader = self.probe_reader(drawings, reconstructions)
        lap("reader")
        results = {
            "model": str(self.model_dir),
            "settings": {
                "num_samples": self.num_samples,
                "seed": self.seed,
                "probe_weight_decay": PROBE_WEIGHT_DECAY,
                "seen_folds": SEEN_FOLDS,
                "max_degraded_loss": MAX_DEGRADED_LOSS,
                "feature_sets": FEATURE_SETS,
                "degradations": DEGRADATIONS,
                **SHAPES_DECODER_SETTINGS,
            },
            "tokenizer": tokenizer,
            "decoder": decoder,
            "llm": llm,
            "reader": reader,
            "stage_times_s": times,
        }
        _write_results(results, output_dir)
        make_grid(self.grid_rows).save(output_dir / GRID_FILE)
        return results


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf probe-shapes`: see the module docstring."""
    parser = argparse.ArgumentParser(prog="seed-hf probe-shapes", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a SEED-Shapes checkpoint folder (e.g. models/seed-shapes)")
    source.add_argument(
        "--tokenizer",
        help="a visual tokenizer folder (e.g. a train-shapes run's tokenizer_stage2): the tokenizer section only",
    )
    parser.add_argument(
        "--teacher",
        help="with --tokenizer: the CLIP teacher its stage 2 regressed (a train-shapes run's teacher), to measure "
        "the generation embedding against it",
    )
    parser.add_argument(
        "--oracle-head-steps",
        type=int,
        default=0,
        help="with --teacher: also train a fresh generation head this many steps on perfectly attribute-wise "
        "codes and on the tokenizer's own (an upper bound for attribute-wise codes; 3000 takes ~4 min)",
    )
    parser.add_argument(
        "--llm",
        help="with --teacher: an LLM trained on the tokenizer's codes (a train-shapes run's llm_full), to measure "
        "the codes it writes for captions (attributes read from them, their generation embedding), no decoder",
    )
    parser.add_argument(
        "--output-dir", required=True, help="where probe.json, probe.md (and probe.png) are written"
    )
    parser.add_argument(
        "--num-samples", type=int, default=100, help="held-out captions and images per split (default: 100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out samples and of sampling")
    parser.add_argument("--batch-size", type=int, default=25, help="generation batch size")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.teacher and not args.tokenizer:
        parser.error("--teacher goes with --tokenizer (a whole checkpoint has no teacher)")
    if args.llm and not args.teacher:
        parser.error(
            "--llm goes with --tokenizer and --teacher (its codes are compared with the teacher's images)"
        )
    if args.oracle_head_steps < 0 or (args.oracle_head_steps and not args.teacher):
        parser.error(
            f"--oracle-head-steps must be a non-negative number used with --teacher, got {args.oracle_head_steps}"
        )
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    if args.tokenizer:
        probe_tokenizer_folder(
            args.tokenizer,
            output_dir,
            args.teacher,
            args.seed,
            args.oracle_head_steps,
            llm_dir=args.llm,
            num_samples=args.num_samples,
        )
        print(f"wrote {output_dir / PROBE_FILE} and {output_dir / REPORT_FILE}")
        return 0
    CompositionProbe(args.model, args.num_samples, args.seed, args.batch_size).run(output_dir)
    print(f"wrote {output_dir / PROBE_FILE}, {output_dir / REPORT_FILE} and {output_dir / GRID_FILE}")
    return 0


__all__ = [
    "FEATURE_SETS",
    "CompositionProbe",
    "encode_world",
    "main",
    "probe_generation_targets",
    "probe_llm_codes",
    "probe_oracle_generation_head",
    "probe_tokenizer",
    "probe_tokenizer_folder",
]
