"""Load test of the chat demo: concurrent `gradio_client` clients against one server on 127.0.0.1.

Each client holds one conversation and sends turns of every kind in turn (VQA on the example image, a drawing,
an edit of it, a caption, a drawing), so the server's per-session state grows as it would in use. Every drawing
must be well formed (64x64, the pixel attribute reader finds one shape). Prints the error count, per-turn latency
p50 / p95, the server's peak RSS and its RSS growth from the first to the last round of turns (the server runs
as `seed-hf demo` in its own process, so its memory is measured without the clients').

    python benchmarks/demo_load.py [--clients 8] [--turns 5] [--rounds 5]

(`--rounds` repeats the clients x turns traffic with fresh clients: 8 x 5 x 5 = 200 turns.)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

EXAMPLE = Path(__file__).resolve().parents[1] / "models" / "seed-shapes" / "example.png"
TURNS = (
    ("What color is the square?", True),
    ("draw a small purple circle at the top right on a white background", False),
    ("now move it to the left", False),
    ("", True),
    ("a large red circle in the center on a white background", False),
)


def server_memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of the server process, in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def start_server(port: int) -> subprocess.Popen:
    """`seed-hf demo` on the shipped model, in its own process (so that its memory is the server's alone)."""
    from gradio_client import Client

    server = subprocess.Popen(
        [sys.executable, "-m", "seed_hf.cli", "demo", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the demo server exited with code {server.returncode}")
        try:
            Client(f"http://127.0.0.1:{port}/", verbose=False).close()
            return server
        except Exception:
            time.sleep(1)
    server.terminate()
    raise RuntimeError("the demo server did not answer within 180 s")


def one_client(url: str, turns: int, seed: int) -> tuple[list[float], list[str]]:
    from gradio_client import Client, handle_file
    from PIL import Image

    from seed_hf.training.shapes.reader import read_attributes

    client = Client(url, verbose=False)
    latencies, errors = [], []
    for number in range(turns):
        text, with_image = TURNS[number % len(TURNS)]
        message = {"text": text, "files": [handle_file(str(EXAMPLE))] if with_image else []}
        start = time.perf_counter()
        try:
            _, image, codes = client.predict(message, seed, api_name="/ask")
        except Exception as error:
            errors.append(f"{text!r}: {error}")
            continue
        latencies.append(time.perf_counter() - start)
        if image is not None:
            drawing = Image.open(image)
            reading = read_attributes(drawing)
            if drawing.size != (64, 64) or not reading["valid"] or len(codes) != 32:
                errors.append(f"{text!r}: malformed drawing {drawing.size}, {reading['reason']}")
    client.close()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--turns", type=int, default=5, help="turns per client and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of fresh clients")
    args = parser.parse_args()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/"
    latencies, errors, rss = [], [], []
    start = time.perf_counter()
    try:
        for round_number in range(args.rounds):
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(lambda seed: one_client(url, args.turns, seed), range(args.clients)))
            for client_latencies, client_errors in results:
                latencies += client_latencies
                errors += client_errors
            current, peak = server_memory_mb(server.pid)
            rss.append(current)
            print(f"round {round_number + 1}/{args.rounds}: server RSS {current:.0f} MiB", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    wall = time.perf_counter() - start
    turns = args.clients * args.turns * args.rounds
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    print(f"turns: {turns} ({args.clients} concurrent clients x {args.turns} turns x {args.rounds} rounds)")
    print(f"errors: {len(errors)}" + "".join(f"\n  {error}" for error in errors[:10]))
    print(f"latency per turn: p50 {statistics.median(latencies):.2f} s, p95 {quantiles[18]:.2f} s")
    print(f"throughput: {turns / wall:.2f} turns/s over {wall:.0f} s")
    growth = (rss[-1] - rss[0]) / rss[0] * 100
    print(
        f"server RSS: peak {peak:.0f} MiB, after round 1 {rss[0]:.0f} MiB, after the last {rss[-1]:.0f} MiB "
        f"(growth {growth:+.1f}%, expected < 10%)"
    )


if __name__ == "__main__":
    main()
