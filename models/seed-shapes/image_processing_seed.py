"""Image processor of the SEED tokenizer: any image -> CLIP-normalised `pixel_values` of shape [B, 3, S, S]."""

import base64
import binascii
import io
import os

import numpy as np
import PIL.Image
import PIL.ImageOps
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import ChannelDimension, ImageInput, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType
from transformers.utils.generic import is_torch_tensor

from .configuration_seed_tokenizer import CLIP_IMAGE_MEAN, CLIP_IMAGE_STD

# Channel counts an array image may have: grey, RGB, RGBA.
_SUPPORTED_CHANNELS = (1, 3, 4)
# Pillow modes holding 16-bit (or wider) integer grey levels.
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
# Seconds to wait for the server of an image URL (to connect, then for each read).
DEFAULT_IMAGE_TIMEOUT = 10.0


class SeedImageProcessorKwargs(ImagesKwargs, total=False):
    """
    keep_aspect_ratio (`bool`, *optional*, defaults to `False`):
        Resize so that the image covers `size` with its aspect ratio kept (the shorter side becomes the
        target side), then centre crop to `size`. Off by default: the SEED tokenizer squashes the whole
        image to `size` as its reference pre-processing does.
    """

    keep_aspect_ratio: bool | None


def _scale_16bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map 16-bit grey levels (0..65535) to 0..255 with rounding; 65535 / 257 == 255 so white stays white."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map floating-point intensities in [0, 1] (torchvision's `ToTensor` convention) to 0..255."""
    if values.size and not np.isfinite(values).all():
        raise ValueError("floating-point `images` must be finite, got NaN or infinite values")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(
            f"floating-point `images` must hold intensities in [0, 1], got values in "
            f"[{values.min():g}, {values.max():g}]; pass uint8 data for 0..255 intensities"
        )
    return np.rint(values.astype(np.float32) * 255).astype(np.uint8)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Bring an array of any numeric dtype to 8-bit intensities."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return _scale_16bit_to_uint8(values)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(
                f"integer `images` of dtype {values.dtype} must hold 8-bit intensities in [0, 255], got values in "
                f"[{values.min()}, {values.max()}]; pass uint16 data for 16-bit intensities"
            )
        return values.astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        return _float_to_uint8(values)
    raise TypeError(
        f"`images` arrays must have a boolean, integer or floating-point dtype, got {values.dtype}"
    )


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend a uint8 [..., 4] RGBA array over an opaque white background, giving uint8 [..., 3] RGB."""
    # Transparent pixels store arbitrary colours (often black) that dropping alpha would expose. Shown on
    # a page, transparency reads as the (white) background, which is what logos, stickers and cut-outs
    # are drawn for; transformers' own `convert_to_rgb` also composites on white, so codes agree with it.
    alpha = rgba[..., 3:].astype(np.uint16)
    blended = rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)
    return ((blended + 127) // 255).astype(np.uint8)


def _grey_or_alpha_to_rgb(hwc: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 1 | 3 | 4] -> uint8 [H, W, 3]."""
    if hwc.shape[-1] == 1:
        return np.repeat(hwc, 3, axis=-1)
    if hwc.shape[-1] == 4:
        return _composite_on_white(hwc)
    return hwc


def _check_not_empty(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise ValueError(
            f"`images` must be at least 1x1 pixels, got an image of {height}x{width} (height x width)"
        )


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 [H, W, 3] RGB."""
    if image.mode in _WIDE_INTEGER_MODES:
        # Pillow's own conversion clips these to 0..255, turning most of a 16-bit image white. Mode "I"
        # is what Pillow decodes 16-bit grey files into, so it is read as 16-bit too.
        grey = _scale_16bit_to_uint8(np.clip(np.asarray(image), 0, 65535))
        return _grey_or_alpha_to_rgb(grey[..., None])
    if image.mode == "F":
        return _grey_or_alpha_to_rgb(_float_to_uint8(np.asarray(image))[..., None])
    if image.mode == "La":
        image = image.convert("LA")  # Pillow un-premultiplies "La" only into "LA"
    if image.has_transparency_data:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB"))


def fetch_url(url: str, kind: str = "image", timeout: float | None = DEFAULT_IMAGE_TIMEOUT) -> bytes:
    """
    The bytes at an http(s) `url` of an image or video (`kind`, which the errors name). Raises `ValueError` for an
    invalid URL, `TimeoutError` when the server does not answer within `timeout` seconds and `OSError` when it
    cannot be reached or answers with an error.
    """
    from huggingface_hub.utils import httpx  # the HTTP client transformers' `load_image` uses

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        raise ValueError(f"`{kind}s` URL {url!r} is not a valid URL: {error}") from error
    except httpx.TimeoutException as error:
        raise TimeoutError(
            f"the server of the {kind} {url} did not answer within `timeout`={timeout} s"
        ) from error
    except httpx.HTTPError as error:  # no connection, or an HTTP error status
        raise OSError(f"the {kind} {url} could not be fetched: {error}") from error
    return response.content


def open_image(source: str, timeout: float | None = DEFAULT_IMAGE_TIMEOUT) -> PIL.Image.Image:
    """
    Open an image given as a string, in its own mode: an http(s) URL, a file path or a base64 string (or
    `data:image/...` URI). Every source reads as the same file opened with `PIL.Image.open`, whereas transformers'
    `load_image` converts to RGB, which drops alpha (shown on black instead of white) and clips 16-bit grey levels.
    EXIF orientation is applied later, to every PIL image.

    Raises `ValueError` when `source` is none of these or not a readable image, `TimeoutError` when the server of a
    URL does not answer within `timeout` seconds and `OSError` when it cannot be reached or answers with an error.
    """
    if source.startswith(("http://", "https://")):
        data, name = io.BytesIO(fetch_url(source, "image", timeout)), f"URL {source!r}"
    elif os.path.isfile(source):
        data, name = source, f"file {source!r}"
    else:
        encoded = source.split(",", 1)[-1] if source.startswith("data:image/") else source
        try:
            data = io.BytesIO(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError) as error:
            raise ValueError(
                "an image given as a string must be an http(s) URL, the path of an image file or a base64-encoded "
                f"image, got {source[:80]!r}"
            ) from error
        name = f"string {source[:80]!r} (not a URL nor an existing file, so read as base64)"
    try:
        image = PIL.Image.open(data)
        image.load()
    except (OSError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"`images` {name} is not a readable image: {error}") from error
    return image


def _array_to_channels_last(
    array: np.ndarray, input_data_format: str | ChannelDimension | None, prefer_channels_last: bool
) -> np.ndarray:
    """[H, W], [H, W, C] or [C, H, W] -> [H, W, C], checking the number of channels."""
    if array.ndim == 2:
        return array[..., None]
    if array.ndim != 3:
        raise ValueError(
            "`images` arrays must have 2 (H, W), 3 (H, W, C) or (C, H, W), or 4 (batch) dimensions, "
            f"got shape {tuple(array.shape)}"
        )
    if input_data_format is not None:
        channels_last = ChannelDimension(input_data_format) == ChannelDimension.LAST
    else:
        first_fits = array.shape[0] in _SUPPORTED_CHANNELS
        last_fits = array.shape[-1] in _SUPPORTED_CHANNELS
        # both fit only for tiny images; then follow the container's convention (numpy HWC, torch CHW)
        channels_last = prefer_channels_last if first_fits and last_fits else last_fits
    hwc = array if channels_last else np.moveaxis(array, 0, -1)
    if hwc.shape[-1] not in _SUPPORTED_CHANNELS:
        raise ValueError(
            f"`images` must have 1, 3 or 4 channels (grey, RGB or RGBA), got an array of shape {tuple(array.shape)}"
        )
    return hwc


class SeedImageProcessor(PilBackend):
    r"""
    Image processor of the SEED tokenizer (PIL/NumPy backend, so it runs without torchvision).

    The reference pre-processing of SEED: resize to `size` with bicubic resampling (the aspect ratio is
    not kept), rescale to [0, 1] and normalise with CLIP's mean and std. Inputs may be PIL images of any
    mode, numpy arrays or torch tensors ([H, W], [H, W, C] or [C, H, W], or 4-D batches), file paths or
    URLs, alone or in a list. Everything is first brought to 8-bit RGB, like the reference's PIL input:
    - alpha (RGBA, LA, P or RGB with a transparent colour, 4-channel arrays) is composited on white;
    - grey (L, 1, 1-channel arrays) is repeated over the three channels, CMYK and other modes go
      through Pillow's RGB conversion;
    - 16-bit data (I;16, I, uint16 arrays) is scaled from 0..65535, floating-point data (F, float
      arrays and tensors) is read as intensities in [0, 1], other integer arrays as 0..255.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize images to `size`.
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"height": 224, "width": 224}`):
            Output size; an int `s` means `{"height": s, "width": s}`. Must match the tokenizer config's
            `image_size`.
        resample (`PILImageResampling`, *optional*, defaults to `PILImageResampling.BICUBIC`):
            Resampling filter of the resize.
        keep_aspect_ratio (`bool`, *optional*, defaults to `False`):
            Resize so that the shorter side fits `size` with the aspect ratio kept, then centre crop.
        do_center_crop (`bool`, *optional*, defaults to `False`):
            Whether to centre crop to `crop_size` after resizing.
        crop_size (`dict[str, int]`, *optional*):
            Size of that crop.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply 8-bit intensities by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Scale applied when rescaling.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise with `image_mean` and `image_std`.
        image_mean (`list[float]`, *optional*, defaults to CLIP's mean):
            Per-channel mean.
        image_std (`list[float]`, *optional*, defaults to CLIP's std):
            Per-channel standard deviation.
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Whether to convert non-RGB images to RGB as above; when `False`, inputs must already be RGB.
    """

    valid_kwargs = SeedImageProcessorKwargs

    do_resize = True
    size = {"height": 224, "width": 224}
    resample = PILImageResampling.BICUBIC
    keep_aspect_ratio = False
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = CLIP_IMAGE_MEAN
    image_std = CLIP_IMAGE_STD
    do_convert_rgb = True

    def __init__(self, **kwargs: Unpack[SeedImageProcessorKwargs]):
        super().__init__(**kwargs)

    def preprocess(self, images: ImageInput, **kwargs: Unpack[SeedImageProcessorKwargs]) -> BatchFeature:
        """
        Turn an image or a list of images into `pixel_values` (float32 [B, 3, height, width] when every
        output has the same size). Keyword arguments override the processor's attributes for this call;
        pass `return_tensors="pt"` for a torch tensor.
        """
        return super().preprocess(images, **kwargs)

    def fetch_images(self, image_url_or_urls):
        """Load paths, URLs and base64 strings (alone or in lists) with [`open_image`], which keeps an image's mode
        (alpha, 16-bit levels) where transformers' `load_image` converts to RGB; a URL's server gets
        `DEFAULT_IMAGE_TIMEOUT` seconds."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, str):
            return open_image(image_url_or_urls)
        return super().fetch_images(image_url_or_urls)

    def _prepare_images_structure(self, images: ImageInput, expected_ndims: int = 3) -> list:
        """Flatten `images` (one image, a list of images, or 4-D batches) into a list of single images."""
        candidates = list(images) if isinstance(images, (list, tuple)) else [images]
        flat = []
        for image in candidates:
            if isinstance(image, str):
                image = self.fetch_images(image)
            if isinstance(image, np.ndarray) or is_torch_tensor(image):
                flat.extend(image if image.ndim == 4 else [image])
            elif isinstance(image, PIL.Image.Image):
                flat.append(image)
            else:
                raise TypeError(
                    "`images` must be a PIL image, numpy array, torch tensor, file path or URL, or a list of "
                    f"them, got {type(image).__name__}"
                )
        if not flat:
            raise ValueError("`images` must contain at least one image, got an empty list")
        return flat

    def process_image(
        self,
        image: ImageInput,
        do_convert_rgb: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Bring one image to uint8 RGB [3, H, W] (the backends' channels-first working format)."""
        if isinstance(image, PIL.Image.Image):
            if not do_convert_rgb and image.mode != "RGB":
                raise ValueError(
                    f"`images` must be RGB when do_convert_rgb=False, got a {image.mode} PIL image"
                )
            _check_not_empty(image.height, image.width)
            # Upright, as `load_image` reads paths: a photo opened with `Image.open` gives the same pixels as its
            # path (the transposed copy has no orientation tag left, so a loaded path is not turned twice).
            rgb = _pil_to_rgb(PIL.ImageOps.exif_transpose(image))
        else:
            is_tensor = is_torch_tensor(image)
            if is_tensor:
                image = image.detach().cpu()
                # numpy has no bfloat16; float32 holds every float tensor's [0, 1] intensities
                image = (image.float() if image.is_floating_point() else image).numpy()
            hwc = _array_to_channels_last(image, input_data_format, prefer_channels_last=not is_tensor)
            _check_not_empty(*hwc.shape[:2])
            if not do_convert_rgb and hwc.shape[-1] != 3:
                raise ValueError(
                    f"`images` must be RGB when do_convert_rgb=False, got an array with {hwc.shape[-1]} channels"
                )
            rgb = _grey_or_alpha_to_rgb(_to_uint8(hwc))
        return np.ascontiguousarray(np.moveaxis(rgb, -1, 0))

    @staticmethod
    def _size_covering(height: int, width: int, target: SizeDict) -> SizeDict:
        """Smallest aspect-preserving size covering `target` (the side lengths truncated as torchvision does)."""
        scale = max(target.height / height, target.width / width)
        return SizeDict(
            height=max(target.height, int(height * scale)), width=max(target.width, int(width * scale))
        )

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int | None,
        keep_aspect_ratio: bool,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | tuple[float, ...],
        image_std: float | tuple[float, ...],
        return_tensors: str | TensorType | None,
        **kwargs,
    ) -> BatchFeature:
        if do_resize and not (size.height and size.width):
            raise ValueError(f"`size` must be {{'height': int, 'width': int}} or an int, got {dict(size)}")
        resized = []
        # Pillow resamples one image at a time; everything after the resize is vectorised over the batch.
        for image in images:
            if do_resize and keep_aspect_ratio:
                covering = self._size_covering(*image.shape[-2:], size)
                image = self.center_crop(self.resize(image, covering, resample=resample), size)
            elif do_resize:
                image = self.resize(image, size, resample=resample)
            if do_center_crop:
                image = self.center_crop(image, crop_size)
            resized.append(image)

        scale = np.float32(rescale_factor if do_rescale else 1.0)
        mean = np.asarray(image_mean if do_normalize else 0.0, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(image_std if do_normalize else 1.0, dtype=np.float32).reshape(-1, 1, 1)
        # (x * scale - mean) / std as one in-place multiply-add on the float copy
        multiplier, offset = scale / std, mean / std

        def rescale_and_normalize(uint8_values: np.ndarray) -> np.ndarray:
            values = uint8_values.astype(np.float32)
            values *= multiplier
            values -= offset
            return values

        if len({image.shape for image in resized}) == 1:
            pixel_values = rescale_and_normalize(np.stack(resized))
        else:  # only without resizing, for images of different sizes
            pixel_values = [rescale_and_normalize(image) for image in resized]
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


SeedImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["DEFAULT_IMAGE_TIMEOUT", "SeedImageProcessor", "fetch_url", "open_image"]
