"""EfficientNet-Lite0: the packaged PyTorch weights, read without torch, make a working ImageNet model.

No offline ImageNet class-name list exists here (Keras downloads imagenet_class_index.json), so the
checks use the standard ImageNet-1k indices: 967 espresso, 968 cup, 504 coffee mug, 281-285 cats.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from pocketml.training import efficientnet_lite
from pocketml.training.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL, load_legacy_state_dict

from pocketml.errors import PocketMLError

COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _centre_crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(image)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)


def _normalised(image: np.ndarray) -> np.ndarray:
    return (_centre_crop(image) - efficientnet_lite.PIXEL_MEAN) / efficientnet_lite.PIXEL_STD


def _jpeg_roundtrip(image: np.ndarray, quality: int = 90) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def imagenet_model():
    model = efficientnet_lite.build_efficientnet_lite0((224, 224, 3), include_top=True)
    efficientnet_lite.load_torch_weights(model)
    return model


@pytest.fixture(scope="module")
def photos():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.coffee(), skimage_data.chelsea()


def test_packaged_checkpoint_reads_without_torch():
    state = load_legacy_state_dict(efficientnet_lite.checkpoint_path())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert np.isfinite(state["_bn1.running_var"]).all() and (state["_bn1.running_var"] > 0).all()


def test_imagenet_head_recognises_coffee_and_cat(imagenet_model, photos):
    probs = imagenet_model.predict(np.stack([_normalised(p) for p in photos]), verbose=0)
    coffee, cat = probs.argmax(axis=1)
    assert int(coffee) in COFFEE_CLASSES, f"coffee photo predicted as ImageNet class {coffee}"
    assert int(cat) in CAT_CLASSES, f"cat photo predicted as ImageNet class {cat}"
    assert probs[0, list(COFFEE_CLASSES)].sum() > 0.5 and probs[1, list(CAT_CLASSES)].sum() > 0.5


def test_backbone_features_are_stable_across_reencoding(imagenet_model, photos):
    import keras

    features = keras.Model(imagenet_model.input, imagenet_model.get_layer("avg_pool").output)
    coffee, cat = photos
    batch = np.stack([_normalised(coffee), _normalised(_jpeg_roundtrip(coffee)), _normalised(cat)])
    f = features.predict(batch, verbose=0)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    same, different = float(f[0] @ f[1]), float(f[0] @ f[2])
    assert same > 0.95, f"a re-encoded photo moved its features (cosine {same:.3f})"
    assert different < same - 0.2, f"coffee and cat features are too alike (cosine {different:.3f})"


def _legacy_file(state_pickle: bytes) -> bytes:
    head = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(LEGACY_PROTOCOL, 2)
    return head + pickle.dumps({"little_endian": True}, 2) + state_pickle + pickle.dumps([], 2)


class _RunsCode:
    """What a hostile checkpoint would pickle: a call of an arbitrary global when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_naming_other_globals_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_file(pickle.dumps({"w": _RunsCode(marker)}, 2)))
    with pytest.raises(PocketMLError, match=r"system.*refusing"):
        load_legacy_state_dict(path)
    assert not marker.exists()


def test_zip_and_garbage_checkpoints_are_user_errors(tmp_path):
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(PocketMLError, match="zip-format"):
        load_legacy_state_dict(zipped)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PocketMLError, match="not a"):
        load_legacy_state_dict(garbage)
