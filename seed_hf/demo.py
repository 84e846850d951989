"""`seed-hf demo`: a Gradio chat with SEED-LLaMA that reads, draws and edits images over several turns.

`build_demo(model)` loads a SEED checkpoint once (the SEED-LLaMA model, its processor and the unCLIP
de-tokenizer) and returns a `gr.Blocks` app with one multimodal chat: upload images and ask about them (caption,
VQA), ask for a drawing, ask to change the last image, and go on. Every image of a conversation, uploaded or
drawn, is kept as its 32 SEED codes in the session's `gr.State`, so a later turn sees earlier images exactly as
the model read or wrote them. A "See the tokens" panel shows, for any image of the chat, its 32 causal codes as
a 4x8 grid and the de-tokenizer's reconstruction from those codes beside the original.

The model side (loading the checkpoint, answering a turn, when to draw, streaming) is [`~seed_hf.demo_chat`].
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from seed_hf.demo_chat import REPLY_MODES, ChatSession, SeedChat, TurnSettings, TurnUpdate, reply_mode

logger = logging.getLogger(__name__)

CODE_GRID_COLUMNS = 8
# two turns in flight at once: one writing (LLM) while the other denoises, on a 2-core machine
DEFAULT_CONCURRENCY_LIMIT = 2
MAX_QUEUE_SIZE = 64


def code_grid(codes: list[int]) -> list[list[int]]:
    """An image's codes as rows of `CODE_GRID_COLUMNS` (4x8 for 32 codes), in causal order."""
    return [codes[start : start + CODE_GRID_COLUMNS] for start in range(0, len(codes), CODE_GRID_COLUMNS)]


def _open_upload(path: str | os.PathLike) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{Path(path).name} could not be read as an image ({error})") from error


def limit_malloc_arenas(arenas: int = 2) -> None:
    """
    Cap glibc's malloc arenas: a server whose requests run on many threads otherwise keeps growing one arena per
    thread, each fragmented by the tensors it held (measured with `benchmarks/demo_load.py`: +11% RSS over 200 turns
    with the default, +2% with two arenas). A no-op where the C library is not glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_ARENA_MAX, arenas)


# glibc's mallopt parameter number of the arena cap (malloc.h)
_M_ARENA_MAX = -8


def build_demo(model: str | os.PathLike | None = None, engine: SeedChat | None = None):
    """
    The SEED chat demo as a queued `gr.Blocks` app.

    Args:
        model (`str` or `os.PathLike`, *optional*): a SEED checkpoint folder or Hub repo id (default:
            `$SEED_HF_MODEL`, else the shipped `models/seed-shapes` of a source checkout).
        engine ([`SeedChat`], *optional*): an already loaded model to serve instead of `model`.

    API endpoints (for `gradio_client`), besides the chat's own: `/ask` (a multimodal message ->
    the answer's text, its first drawn image and that image's codes; the conversation goes on across calls of
    one client) and `/tokens` (an image number of the session -> its code grid, original and reconstruction).
    """
    import gradio as gr

    limit_malloc_arenas()  # before the server starts its worker threads
    engine = engine if engine is not None else SeedChat(model)
    defaults = engine.default_settings()
    example = engine.example_image()

    def settings_of(seed, temperature, top_p, image_guidance, steps, decoder_guidance, reply_as):
        return TurnSettings(
            int(seed), float(temperature), float(top_p), float(image_guidance), int(steps),
            float(decoder_guidance), reply_as,
        )  # fmt: skip

    def start_turn(message: dict | None, session: ChatSession | None, settings: TurnSettings):
        message = message or {}
        try:
            images = [_open_upload(path) for path in message.get("files") or []]
            return engine.chat(session, message.get("text") or "", images, settings), images
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error)) from error

    def run_turn(turn: Iterator[TurnUpdate]) -> Iterator[TurnUpdate]:
        warned = False
        try:
            for update in turn:
                if update.dropped_turns and not warned:
                    gr.Warning(
                        f"The conversation is longer than the model's context: the {update.dropped_turns} "
                        "oldest turn(s) are left out of what the model sees."
                    )
                    warned = True
                yield update
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error)) from error
        except Exception as error:
            logger.exception("a turn failed")
            raise gr.Error("The model failed on this turn (see the server log); try again.") from error

    def chat_content(update: TurnUpdate) -> list:
        content: list = [
            segment if isinstance(segment, str) else gr.Image(value=segment, format="png")
            for segment in update.segments
        ]
        if update.status:
            content.append(f"*{update.status}…*")
        return content or ["…"]

    def image_choices(session: ChatSession):
        choices = [(image.label, index) for index, image in enumerate(session.images)]
        return gr.Dropdown(choices=choices, value=choices[-1][1] if choices else None)

    def respond(
        message, history, session, seed, temperature, top_p, image_guidance, steps, decoder_guidance, reply_as
    ):
        session = session if session is not None else ChatSession()
        settings = settings_of(seed, temperature, top_p, image_guidance, steps, decoder_guidance, reply_as)
        turn, images = start_turn(message, session, settings)
        history = list(history or [])
        history.extend({"role": "user", "content": gr.Image(value=image, format="png")} for image in images)
        if (message or {}).get("text"):
            history.append({"role": "user", "content": message["text"]})
        for update in run_turn(turn):
            answer = {"role": "assistant", "content": chat_content(update)}
            yield [*history, answer], session, gr.skip()
        yield gr.skip(), session, image_choices(session)

    def ask(message, session, seed, temperature, top_p, image_guidance, steps, decoder_guidance, reply_as):
        session = session if session is not None else ChatSession()
        settings = settings_of(seed, temperature, top_p, image_guidance, steps, decoder_guidance, reply_as)
        turn, _ = start_turn(message, session, settings)
        *_, final = run_turn(turn)
        text = "".join(segment for segment in final.segments if isinstance(segment, str))
        pictures = [segment for segment in final.segments if not isinstance(segment, str)]
        drawn_codes = session.images[-1].codes if pictures else None
        return text, pictures[0] if pictures else None, drawn_codes, session

    def show_tokens(image_index, session, seed, steps, decoder_guidance):
        if session is None or image_index is None or not 0 <= int(image_index) < len(session.images):
            raise gr.Error("Pick an image of this conversation.")
        image = session.images[int(image_index)]
        settings = dataclasses.replace(
            defaults,
            seed=int(seed),
            num_inference_steps=int(steps),
            decoder_guidance_scale=float(decoder_guidance),
        )
        return code_grid(image.codes), image.image, engine.draw(image.codes, settings)

    def clear():
        return [], None, gr.Dropdown(choices=[], value=None), None, None, None

    examples = [
        [{"text": "a large red circle in the center on a white background", "files": []}],
        [{"text": "draw a small purple circle at the top right on a white background", "files": []}],
        [{"text": "now move it to the left", "files": []}],
    ]
    if example is not None:
        examples[1:1] = [
            [{"text": engine.caption_instruction, "files": [str(example)]}],
            [{"text": "What color is the square?", "files": [str(example)]}],
            [{"text": "make it orange", "files": [str(example)]}],
        ]

    with gr.Blocks(title="SEED-LLaMA chat", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            f"## SEED-LLaMA: read and draw images as 32 discrete codes\n"
            f"Model: `{engine.model_dir.name}`. Upload images and ask about them, ask for a drawing, ask to "
            "change it. Questions are answered in text, requests with a drawing verb (draw, make, change, "
            "move, ...) with an image, and the model decides otherwise (see *Reply as*)."
        )
        session = gr.State(None, time_to_live=3600)
        chatbot = gr.Chatbot(label="Chat", height=480, elem_id="seed-chat")
        message = gr.MultimodalTextbox(
            file_types=["image"],
            file_count="multiple",
            placeholder="Ask about an image, or ask for a drawing…",
            show_label=False,
            elem_id="seed-message",
        )
        clear_button = gr.Button("Clear conversation", size="sm")
        with gr.Accordion("Settings (defaults: the checkpoint's own)", open=False):
            seed = gr.Number(defaults.seed, label="Seed", precision=0)
            reply_as = gr.Radio(list(REPLY_MODES), value="auto", label="Reply as")
            temperature = gr.Slider(0.05, 2.0, defaults.temperature, step=0.05, label="LLM temperature")
            top_p = gr.Slider(0.05, 1.0, defaults.top_p, step=0.05, label="LLM top-p")
            image_guidance = gr.Slider(
                1.0, 10.0, defaults.image_guidance_scale, step=0.5, label="Image guidance (1 = off)"
            )
            steps = gr.Slider(1, 100, defaults.num_inference_steps, step=1, label="Decoder steps")
            decoder_guidance = gr.Slider(
                1.0, 20.0, defaults.decoder_guidance_scale, step=0.5, label="Decoder guidance"
            )
        with gr.Accordion("See the tokens", open=False):
            gr.Markdown(
                "Each image is 32 causal codes (row by row: the first codes carry the most). The reconstruction "
                "is the de-tokenizer drawing those codes alone."
            )
            token_image = gr.Dropdown(
                choices=[], label="Image of this conversation", elem_id="seed-token-image"
            )
            with gr.Row():
                codes_table = gr.Dataframe(
                    headers=[str(column) for column in range(CODE_GRID_COLUMNS)],
                    datatype="number",
                    interactive=False,
                    label="Codes",
                )
                original = gr.Image(label="Original", interactive=False, format="png")
                reconstruction = gr.Image(
                    label="Reconstruction from the codes", interactive=False, format="png"
                )
        gr.Examples(examples, inputs=[message], label="Examples (the shipped SEED-Shapes model)")
        with gr.Row(visible=False):  # inputs and outputs of the /ask and /tokens API endpoints
            answer_text = gr.Textbox()
            answer_image = gr.Image(format="png")
            answer_codes = gr.JSON()
            ask_button = gr.Button()
            image_index = gr.Number(precision=0)
            tokens_button = gr.Button()

        settings_inputs = [seed, temperature, top_p, image_guidance, steps, decoder_guidance, reply_as]
        message.submit(
            lambda: gr.MultimodalTextbox(interactive=False),
            outputs=[message],
            queue=False,
            api_visibility="private",
        ).then(
            respond,
            inputs=[message, chatbot, session, *settings_inputs],
            outputs=[chatbot, session, token_image],
            api_name="chat",
        ).then(
            lambda: gr.MultimodalTextbox(value=None, interactive=True),
            outputs=[message],
            api_visibility="private",
        )
        ask_button.click(
            ask,
            inputs=[message, session, *settings_inputs],
            outputs=[answer_text, answer_image, answer_codes, session],
            api_name="ask",
        )
        token_image.change(
            show_tokens,
            inputs=[token_image, session, seed, steps, decoder_guidance],
            outputs=[codes_table, original, reconstruction],
            api_visibility="private",
        )
        tokens_button.click(
            show_tokens,
            inputs=[image_index, session, seed, steps, decoder_guidance],
            outputs=[codes_table, original, reconstruction],
            api_name="tokens",
        )
        clear_button.click(
            clear,
            outputs=[chatbot, session, token_image, codes_table, original, reconstruction],
            api_visibility="private",
        )
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY_LIMIT, max_size=MAX_QUEUE_SIZE)
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed-hf demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="a SEED checkpoint folder or Hub repo id (default: $SEED_HF_MODEL, else the shipped "
        "models/seed-shapes of a source checkout)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free)"
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    args = parser.parse_args(argv)
    try:
        demo = build_demo(args.model)
    except (ValueError, OSError) as error:
        parser.exit(2, f"seed-hf demo: error: {error}\n")
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


__all__ = ["ChatSession", "SeedChat", "TurnSettings", "build_demo", "code_grid", "main", "reply_mode"]
