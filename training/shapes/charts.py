"""Bar charts of rates in [0, 1] drawn with PIL (no plotting library): the ablation reports' `results.png` and the
SEED-Shapes card's per-attribute accuracy, seen vs unseen."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


def bar_chart(
    title: str,
    series: Sequence[str],
    groups: Sequence[tuple[str, Sequence[float]]],
    bar_width: int = 32,
    plot_height: int = 240,
) -> Image.Image:
    """
    A grouped bar chart of rates: one group per `(label, values)` of `groups`, one bar per series (named in the
    legend, `series[i]` for `values[i]`), each bar labelled with its value, on a 0-1 axis.
    """
    for label, values in groups:
        if len(values) != len(series):
            raise ValueError(f"group {label!r} has {len(values)} values for {len(series)} series")
    group_width, left, top = bar_width * len(series) + 48, 48, 56
    image = Image.new("RGB", (left + max(len(groups), 1) * group_width + 16, top + plot_height + 80), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black")
    for index, name in enumerate(series):
        x = left + index * 140
        draw.rectangle((x, 28, x + 12, 40), fill=COLOURS[index % len(COLOURS)])
        draw.text((x + 18, 28), name, fill="black")
    bottom = top + plot_height
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - tick * plot_height
        draw.line((left - 4, y, image.width - 8, y), fill="#dddddd")
        draw.text((8, y - 6), f"{tick:.2f}", fill="black")
    for group, (label, values) in enumerate(groups):
        x0 = left + group * group_width + 24
        for index, value in enumerate(values):
            x = x0 + index * bar_width
            draw.rectangle(
                (x, bottom - value * plot_height, x + bar_width - 4, bottom),
                fill=COLOURS[index % len(COLOURS)],
            )
            draw.text((x, bottom - value * plot_height - 12), f"{value:.2f}", fill="black")
        for line_index, line in enumerate(textwrap.wrap(label, max(group_width // 7, 8))):
            draw.text((x0 - 16, bottom + 6 + 12 * line_index), line, fill="black")
    draw.line((left, top, left, bottom), fill="black")
    draw.line((left, bottom, image.width - 8, bottom), fill="black")
    return image


__all__ = ["COLOURS", "bar_chart"]
