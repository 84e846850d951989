"""Model cards of seed-hf checkpoints: Jinja templates of this package rendered with
`huggingface_hub.ModelCard.from_template`, with Hub metadata (`ModelCardData`, `model-index`). See `builder`."""

from .builder import write_converted_cards, write_shapes_cards

__all__ = ["write_converted_cards", "write_shapes_cards"]
