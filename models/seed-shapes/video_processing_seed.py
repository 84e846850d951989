"""Videos for SEED-LLaMA: a video is read as a few frames sampled uniformly, each of which becomes one SEED image.

A video is a sequence of frames (PIL images, [H, W, C] or [C, H, W] arrays or tensors), a 4-D array or tensor
([T, H, W, C] or [T, C, H, W]) or the path or http(s) URL of a video file, which PyAV decodes
(`pip install "seed-hf[video]"`).
"""

from __future__ import annotations

import io
import os

import numpy as np
import PIL.Image
from transformers.utils.generic import is_torch_tensor
from transformers.video_utils import VideoMetadata, default_sample_indices_fn

from .image_processing_seed import DEFAULT_IMAGE_TIMEOUT, _array_to_channels_last, fetch_url

# Frames sampled from a video by default: each frame is one image of 34 tokens, so a few keep a clip's prompt short.
DEFAULT_NUM_FRAMES = 4


def check_num_frames(num_frames, argument: str = "num_frames") -> int:
    """`num_frames` if it is a positive int; `TypeError` or `ValueError` naming `argument` otherwise."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise TypeError(f"{argument} must be a positive int, got {type(num_frames).__name__} {num_frames!r}")
    if num_frames < 1:
        raise ValueError(f"{argument} must be a positive int, got {num_frames}")
    return int(num_frames)


def sample_frame_indices(total_num_frames: int, num_frames: int) -> list[int]:
    """
    The frames read of a video of `total_num_frames` frames: transformers' `default_sample_indices_fn` for
    `n = min(num_frames, total_num_frames)` frames, i.e. frame `i * total_num_frames // n` for `i` in `0..n-1`
    (the first frame, then every `total_num_frames / n`-th); a video shorter than `num_frames` gives all its frames.
    """
    metadata = VideoMetadata(total_num_frames=total_num_frames)
    return default_sample_indices_fn(metadata, num_frames=min(num_frames, total_num_frames)).tolist()


def _is_frame(value) -> bool:
    return isinstance(value, PIL.Image.Image) or (
        (isinstance(value, np.ndarray) or is_torch_tensor(value)) and value.ndim in (2, 3)
    )


def make_list_of_videos(videos) -> list:
    """`videos` as a list of videos: one video (a sequence of frames, a 4-D array or tensor, a path or URL) or a
    list of videos."""
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError("`videos` must hold at least one video, got an empty list")
        return [videos] if all(map(_is_frame, videos)) else list(videos)
    return [videos]


def _frame_size(frame) -> tuple[int, int]:
    """(height, width) of a frame, its channel axis found as `SeedImageProcessor` finds it."""
    if isinstance(frame, PIL.Image.Image):
        return frame.height, frame.width
    shape_only = np.broadcast_to(np.uint8(0), tuple(frame.shape))  # no copy of the pixels
    return _array_to_channels_last(shape_only, None, prefer_channels_last=not is_torch_tensor(frame)).shape[
        :2
    ]


def _check_frames(frames, name: str) -> None:
    """Every item a frame, and all frames of one size."""
    first_size = None
    for index, frame in enumerate(frames):
        if not _is_frame(frame):
            shape = f" of shape {tuple(frame.shape)}" if hasattr(frame, "shape") else ""
            raise TypeError(
                f"frame {index} of {name} must be a PIL image or a 2-D or 3-D array or tensor, got "
                f"{type(frame).__name__}{shape}"
            )
        try:
            size = _frame_size(frame)
        except ValueError as error:
            raise ValueError(f"frame {index} of {name}: {error}") from error
        first_size = first_size or size
        if size != first_size:
            raise ValueError(
                f"the frames of {name} must all have one size, got {first_size[0]}x{first_size[1]} for frame 0 "
                f"and {size[0]}x{size[1]} for frame {index} (height x width)"
            )


def sample_video(
    video, num_frames: int, name: str, timeout: float | None = DEFAULT_IMAGE_TIMEOUT
) -> tuple[list, int]:
    """
    The frames sampled from `video` ([`sample_frame_indices`]), as given (files: uint8 [H, W, 3] RGB arrays), and
    the video's frame count. `name` says which video the errors are about (e.g. "video 0 of `videos`").
    """
    if isinstance(video, str):
        return read_video_file(video, num_frames, name, timeout)
    if isinstance(video, np.ndarray) or is_torch_tensor(video):
        if video.ndim != 4:
            raise ValueError(
                f"{name} given as an array must have 4 dimensions (frames x height x width x channels or frames x "
                f"channels x height x width), got shape {tuple(video.shape)}"
            )
        _check_frames(video[:1], name)
    elif isinstance(video, (list, tuple)):
        _check_frames(video, name)
    else:
        raise TypeError(
            f"{name} must be a list of frames (PIL images, arrays or tensors), a 4-D array or tensor, or the path or "
            f"URL of a video file, got {type(video).__name__}"
        )
    if len(video) == 0:
        raise ValueError(f"{name} has no frames")
    return [video[index] for index in sample_frame_indices(len(video), num_frames)], len(video)


def _import_pyav():
    try:
        import av
    except ImportError as error:
        raise ImportError(
            'reading video files needs PyAV: pip install "seed-hf[video]" (or pip install av)'
        ) from error
    return av


def read_video_file(
    source: str, num_frames: int, name: str = "video", timeout: float | None = DEFAULT_IMAGE_TIMEOUT
) -> tuple[list[np.ndarray], int]:
    """
    Decode the sampled frames of the video file at `source` (a path or an http(s) URL, whose server gets `timeout`
    seconds) with PyAV: uint8 [H, W, 3] RGB arrays, and the video's frame count. Only frames up to the last sampled
    one are decoded. (transformers' `load_video` reads the count from the container header alone, which Matroska
    files leave at 0, and fetches URLs without a timeout, so this decodes with PyAV directly.)
    """
    is_url = source.startswith(("http://", "https://"))
    if not is_url and not os.path.isfile(source):
        raise ValueError(
            f"{name} given as a string must be an http(s) URL or the path of a video file, got {source[:80]!r}"
        )
    av = _import_pyav()
    data = io.BytesIO(fetch_url(source, "video", timeout)) if is_url else source
    try:
        with av.open(data) as container:
            if not container.streams.video:
                raise ValueError(f"{name} {source!r} holds no video stream")
            stream = container.streams.video[0]
            # the header's count when there is one; otherwise one packet per frame
            total_num_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            if total_num_frames == 0:
                raise ValueError(f"{name} {source!r} has no frames")
            indices = sample_frame_indices(total_num_frames, num_frames)
            container.seek(0)
            frames, wanted = [], set(indices)
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if index == indices[-1]:
                    break
    except av.error.FFmpegError as error:
        raise ValueError(f"{name} {source!r} is not a readable video: {error}") from error
    if len(frames) < len(indices):
        raise ValueError(
            f"{name} {source!r} declares {total_num_frames} frames, but frame {indices[len(frames)]} could not be "
            "decoded"
        )
    return frames, total_num_frames


__all__ = [
    "DEFAULT_NUM_FRAMES",
    "check_num_frames",
    "make_list_of_videos",
    "read_video_file",
    "sample_frame_indices",
    "sample_video",
]
