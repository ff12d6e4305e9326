"""Training: tf.data input from the dataset manifest, the backbone registry, two-phase fine-tuning, evaluation."""
