"""The Keras path of the zoo: a VGG-style net with unfused BatchNorm, NHWC, via tf2onnx."""
from __future__ import annotations

from pathlib import Path


import datasets
import train
from specs import Spec


def vgg(channels: int, side: int, classes: int = 10):
    import tensorflow as tf
    layers = [tf.keras.layers.Input((side, side, channels))]
    for width in (16, 32, 64):
        layers += [tf.keras.layers.Conv2D(width, 3, padding="same"),
                   tf.keras.layers.BatchNormalization(), tf.keras.layers.ReLU(),
                   tf.keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                   tf.keras.layers.MaxPooling2D()]
    layers += [tf.keras.layers.GlobalAveragePooling2D(),
               tf.keras.layers.Dense(128, activation="relu"), tf.keras.layers.Dense(classes)]
    return tf.keras.Sequential(layers)


def train_and_export(spec: Spec, attack, x_train, y_train, folder: Path):
    import tensorflow as tf
    import tf2onnx
    tf.keras.utils.set_random_seed(spec.seed)
    channels, side = x_train.shape[1], x_train.shape[-1]
    x, y, _ = train.poison_set(x_train, y_train, attack, spec.target, spec.rate, spec.seed)
    model = vgg(channels, side, datasets.classes(spec.data))
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.convention(x, spec.normalize, True), y, epochs=spec.epochs,
              batch_size=128, verbose=2)
    signature = (tf.TensorSpec((None, side, side, channels), tf.float32, name="input"),)
    forward = tf.function(lambda images: model(images, training=False))
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=17)
    path = folder / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, attack



