"""A randomly initialised Keras InceptionResNetV2 with randomised BatchNorm statistics, for converter tests."""

import numpy as np


def random_keras_irv2(keras, seed: int):
    """Fresh BatchNorms are identities (beta 0, mean 0, var 1); distinct values make a beta/mean/var mix-up show."""
    keras.backend.clear_session()  # auto-names restart at conv2d, batch_normalization (tests rely on it)
    keras.utils.set_random_seed(seed)
    model = keras.applications.InceptionResNetV2(weights=None, include_top=False, input_shape=(None, None, 3))
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.normal(0, 0.1, beta.shape).astype(np.float32),
                rng.normal(0, 0.1, mean.shape).astype(np.float32),
                rng.uniform(0.5, 1.5, var.shape).astype(np.float32),
            ])
    return model
