"""Run by test_backends under KERAS_BACKEND=jax with 2 forced host devices: train the same tiny
config on 1 and on 2 devices, then write both models' probabilities on the val photos and whether
TensorFlow was ever imported. `python -m tests.training.jax_devices_child DATASET OUT`"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SIZE = 48  # px: below this Lite0's 1x1 feature map leaves a tiny model near-constant


def check_wrapped_predictions_keep_their_order(images: np.ndarray) -> None:
    """Phase 1's augmented-feature model, without augmentation, gives the extractor's features in order
    when Keras' worker threads serve the batches (JAX's predict once shifted them by a batch)."""
    from pocketml.training import model as model_lib
    from pocketml.training.augment import AugmentedFeatures
    from pocketml.training.loader import predict_images
    from pocketml.training.train import new_classifier

    from pocketml.configs.train import TrainConfig

    classifier = new_classifier(TrainConfig(backbone="efficientnet_lite0", image_size=SIZE), 2)
    extractor = model_lib.feature_extractor(classifier)
    clean = predict_images(extractor, images, 12, workers=2)
    wrapped = predict_images(AugmentedFeatures(extractor, None), images, 12, workers=2)
    assert np.abs(clean - wrapped).max() <= 1e-5, np.abs(clean - wrapped).max()


def main(dataset: str, out: str) -> None:
    import keras
    from pocketml.training.data import decoded_images, load_splits
    from pocketml.training.train import train

    from pocketml.configs.train import TrainConfig

    assert keras.backend.backend() == "jax"
    images = decoded_images(load_splits(dataset).val, SIZE)
    check_wrapped_predictions_keep_their_order(images)
    for devices in (1, 2):
        config = TrainConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=SIZE, batch_size=16,
                             epochs_frozen=2, epochs_finetune=1, feature_cache_copies=1, unfreeze_blocks=1,
                             devices=devices, patience=2)
        model_dir = train(dataset, Path(out) / f"devices{devices}", config)
        model = keras.saving.load_model(model_dir / "model.keras", safe_mode=True, compile=False)
        np.save(Path(out) / f"probs{devices}.npy", model.predict(images, verbose=0))
    (Path(out) / "child.json").write_text(json.dumps({"tensorflow_imported": "tensorflow" in sys.modules}))


if __name__ == "__main__":
    main(*sys.argv[1:])
