"""keras.applications' ImageNet weights for the encoders built from it (downloaded once into ~/.keras/models)."""

from __future__ import annotations

import urllib.error
import warnings

from segkit.errors import UserError


def _is_download_failure(error):
    # keras.utils.get_file wraps HTTPError/URLError into a bare Exception("URL fetch failure on
    # <url>: ..."); socket-level failures that urlretrieve lets through are OSErrors.
    if type(error) is Exception and str(error).startswith("URL fetch failure"):
        return True
    return isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError))


def keras_application(factory, encoder, weights, **kwargs):
    """`factory(weights=..., **kwargs)` for a keras.applications constructor.

    `weights` is what `parse_encoder_weights` returned; a file path builds with random init
    (the file is loaded into the encoder afterwards by `load_encoder_weights`). A failed
    ImageNet download becomes a one-line UserError.

    Example:
        >>> base = keras_application(keras.applications.VGG16, "vgg16", None, include_top=False)
    """
    try:
        with warnings.catch_warnings():
            # Segmentation takes any input size; the conv weights do not depend on it.
            warnings.filterwarnings("ignore", message=".*will be loaded as the default")
            return factory(weights="imagenet" if weights == "imagenet" else None, **kwargs)
    except Exception as error:
        if weights == "imagenet" and _is_download_failure(error):
            raise UserError(no_imagenet_message(encoder, "no network?")) from error
        raise


def no_imagenet_message(encoder, reason):
    return (
        f"could not get ImageNet weights for {encoder} ({reason}); "
        f"pass --encoder-weights none or a local weights file"
    )
