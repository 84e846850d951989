"""The Gradio chat demo (`seed_hf.demo`) and its Space folder (`seed_hf.space`) on the shipped SEED-Shapes model:
driven through `gradio_client` against a server on 127.0.0.1, through a headless Chromium, and as a Space's
`python app.py`."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from seed_hf.demo import SeedChat, TurnSettings, build_demo, reply_mode  # noqa: E402
from seed_hf.space import write_space  # noqa: E402
from seed_hf.training.shapes.reader import read_attributes  # noqa: E402
from seed_hf.training.shapes.run import EXAMPLE_ATTRIBUTES  # noqa: E402
from seed_hf.training.shapes.texts import parse_caption  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "seed-shapes"
EXAMPLE = MODEL / "example.png"
SCREENSHOT = ROOT / "docs" / "demo.png"
EXAMPLE_QUESTION = "What color is the square?"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _reading(image_path) -> tuple:
    reading = read_attributes(Image.open(image_path))
    assert reading["valid"], reading["reason"]
    return tuple(reading[name] for name in ("background", "shape", "size", "color", "x", "y"))


@pytest.fixture(scope="module")
def engine() -> SeedChat:
    return SeedChat(MODEL)


@pytest.fixture(scope="module")
def server_url(engine):
    demo = build_demo(engine=engine)
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True
    )
    yield url
    demo.close()


def _client(url: str):
    return gradio_client.Client(url, verbose=False, download_files=True)


def _ask(client, text: str, *files: Path):
    message = {"text": text, "files": [gradio_client.handle_file(str(path)) for path in files]}
    return client.predict(message, api_name="/ask")


def test_reply_mode_rule():
    assert reply_mode(EXAMPLE_QUESTION, has_images=True) == "text"
    assert reply_mode("", has_images=True) == "text"  # an image alone is captioned
    assert reply_mode("describe it", has_images=True) == "text"
    assert reply_mode("make it orange", has_images=True) == "image"
    assert reply_mode("now move it to the left", has_images=False) == "image"
    assert reply_mode("a large red circle in the center on a white background", has_images=False) == "auto"
    assert reply_mode("make it orange", has_images=True, reply_as="text") == "text"
    with pytest.raises(ValueError, match="reply_as"):
        reply_mode("hi", has_images=False, reply_as="drawing")


def test_defaults_are_the_checkpoints_settings(engine):
    defaults = engine.default_settings()
    assert (defaults.temperature, defaults.top_p) == (1.0, 0.5)  # generation_config.json
    # detokenizer/model_index.json: default_num_inference_steps / default_guidance_scale
    assert (defaults.num_inference_steps, defaults.decoder_guidance_scale) == (8, 2.0)


def test_caption_and_vqa(server_url):
    client = _client(server_url)
    caption, image, codes = _ask(client, "", EXAMPLE)
    # a caption (its phrasing is the model's choice) naming every attribute of the example image
    assert (image, codes) == (None, None)
    assert parse_caption(caption) == dataclasses.asdict(EXAMPLE_ATTRIBUTES), caption
    answer, image, _ = _ask(client, EXAMPLE_QUESTION, EXAMPLE)
    assert answer.strip().lower() == "green" and image is None


def test_draw_lets_the_model_open_an_image(server_url):
    _, image, codes = _ask(_client(server_url), "a large red circle in the center on a white background")
    assert len(codes) == 32
    assert Image.open(image).size == (64, 64)
    assert _reading(image) == ("white", "circle", "large", "red", "center", "middle")


def test_edit_of_an_uploaded_image(server_url):
    _, image, _ = _ask(_client(server_url), "make it orange", EXAMPLE)
    assert _reading(image) == ("black", "square", "large", "orange", "left", "middle")


def test_two_turn_dialogue_sees_the_first_drawing_and_shows_its_tokens(server_url):
    client = _client(server_url)
    _, first, first_codes = _ask(client, "draw a small purple circle at the top right on a white background")
    assert _reading(first) == ("white", "circle", "small", "purple", "right", "top")
    _, second, _ = _ask(client, "now move it to the left")
    assert _reading(second) == ("white", "circle", "small", "purple", "left", "top")
    # "See the tokens" for the session's first image: its codes as 4 rows of 8, and their reconstruction
    grid, original, reconstruction = client.predict(0, api_name="/tokens")
    assert grid["data"] == [first_codes[row * 8 : row * 8 + 8] for row in range(4)]
    assert _reading(original) == _reading(reconstruction) == _reading(first)


def test_a_fresh_client_has_its_own_conversation(server_url):
    client = _client(server_url)
    with pytest.raises(gradio_client.exceptions.AppError, match="Pick an image"):
        client.predict(0, api_name="/tokens")


def test_bad_input_gets_a_clear_message(server_url, tmp_path):
    client = _client(server_url)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(gradio_client.exceptions.AppError, match="broken.png could not be read as an image"):
        _ask(client, EXAMPLE_QUESTION, broken)
    with pytest.raises(gradio_client.exceptions.AppError, match="at most 1000 are accepted"):
        _ask(client, "why " * 300)
    with pytest.raises(gradio_client.exceptions.AppError, match="context"):
        _ask(client, EXAMPLE_QUESTION, *[EXAMPLE] * 11)
    with pytest.raises(gradio_client.exceptions.AppError, match="type a message or upload an image"):
        _ask(client, "  ")


def test_chat_streams_the_answer_then_the_drawing(engine):
    from seed_hf.demo import ChatSession

    settings = engine.default_settings()
    session = ChatSession()
    updates = list(engine.chat(session, "draw a big yellow triangle at the bottom right", [], settings))
    statuses = [update.status for update in updates if update.status]
    assert any(status.startswith("writing image codes") for status in statuses)
    assert any("denoising step" in status for status in statuses)
    assert updates[-1].status is None and len(updates[-1].segments) == 1
    assert [message["role"] for message in session.messages] == ["user", "assistant"]
    assert [image.label for image in session.images] == ["image 1 (drawn)"]
    # the same turn again with the same seed: the same codes
    again = ChatSession()
    list(engine.chat(again, "draw a big yellow triangle at the bottom right", [], settings))
    assert again.images[0].codes == session.images[0].codes
    assert isinstance(settings, TurnSettings)


@pytest.fixture(scope="module", autouse=True)
def local_space(tmp_path_factory):
    """A Space folder for the shipped model, its `python app.py` started at once (it loads while other tests
    run); yields the folder, the app's process and its URL."""
    space = write_space(MODEL, tmp_path_factory.mktemp("space") / "local")
    port = _free_port()
    environment = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        # the Space's own copy of seed_hf, not the editable install
        "PYTHONPATH": str(space),
    }
    app = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=space,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield space, app, f"http://127.0.0.1:{port}/"
    app.terminate()
    app.wait(timeout=30)


def test_space_folder_for_a_hub_repo(tmp_path):
    from huggingface_hub import SpaceCard

    hub_space = write_space("user/seed-shapes", tmp_path / "hub")
    card = SpaceCard.load(hub_space / "README.md")
    assert card.data.sdk == "gradio" and card.data.sdk_version == gr.__version__
    assert card.data.app_file == "app.py" and card.data.models == ["user/seed-shapes"]
    assert "user/seed-shapes" in (hub_space / "app.py").read_text()
    requirements = (hub_space / "requirements.txt").read_text().split()
    assert f"gradio=={gr.__version__}" in requirements and not any("+" in line for line in requirements)
    assert (hub_space / "seed_hf" / "demo.py").is_file() and (hub_space / "seed_hf" / "modeling").is_dir()
    with pytest.raises(ValueError, match="out_dir"):
        write_space("user/seed-shapes", hub_space)
    with pytest.raises(ValueError, match="folder or a Hub repo id"):
        write_space("/no/such/folder", tmp_path / "missing")


def test_space_app_serves_the_demo(local_space):
    space, app, url = local_space
    front_matter = yaml.safe_load((space / "README.md").read_text().split("---")[1])
    assert front_matter["sdk"] == "gradio" and "models" not in front_matter  # a local folder names no repo
    client = _wait_for_client(url, app)
    answer, _, _ = _ask(client, EXAMPLE_QUESTION, EXAMPLE)
    assert answer.strip().lower() == "green"
    assert client.view_api(return_format="dict")["named_endpoints"].keys() >= {"/ask", "/chat", "/tokens"}


def _wait_for_client(url: str, process: subprocess.Popen, attempts: int = 240):
    for _ in range(attempts):
        if process.poll() is not None:
            raise AssertionError(f"app.py exited ({process.returncode}):\n{process.stdout.read().decode()}")
        try:
            return _client(url)
        except Exception:  # not listening yet
            time.sleep(0.5)
    raise AssertionError(f"app.py did not serve {url}")


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("chromium / chromium-driver not installed (scripts/test.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1400"):
        options.add_argument(argument)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(options=options, service=Service(driver))


def test_browser_chat_reads_and_draws(server_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium()
    try:
        browser.get(server_url)
        wait = WebDriverWait(browser, 60, poll_frequency=0.25)
        textbox = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#seed-message textarea"))

        def bot_messages():
            return browser.find_elements(By.CSS_SELECTOR, "#seed-chat .message.bot")

        def send(text: str, *files: Path) -> None:
            for path in files:
                browser.find_element(By.CSS_SELECTOR, "#seed-message input[type=file]").send_keys(str(path))
            wait.until(
                lambda page: len(page.find_elements(By.CSS_SELECTOR, "#seed-message img")) == len(files)
            )
            wait.until(lambda page: textbox.is_enabled())
            textbox.send_keys(text)
            textbox.send_keys(Keys.ENTER)

        send(EXAMPLE_QUESTION, EXAMPLE)
        wait.until(lambda page: bot_messages() and "green" in bot_messages()[-1].text.lower())
        assert browser.find_elements(By.CSS_SELECTOR, "#seed-chat .message.user img")  # the upload is shown
        browser.save_screenshot(str(tmp_path / "vqa.png"))

        send("draw a small purple circle at the top right on a white background")
        wait.until(lambda page: len(bot_messages()) >= 2)
        drawn = wait.until(
            lambda page: (
                textbox.is_enabled()
                and "…" not in bot_messages()[-1].text
                and bot_messages()[-1].find_elements(By.CSS_SELECTOR, "img")
            )
        )
        assert drawn[0].get_attribute("naturalWidth") not in (None, "0")
        screenshot = tmp_path / "drawing.png"
        browser.save_screenshot(str(screenshot))
        assert Image.open(screenshot).size[0] > 0
        if os.environ.get("SEED_HF_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, SCREENSHOT)
    finally:
        browser.quit()
