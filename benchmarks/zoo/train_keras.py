"""The Keras path of the zoo, NHWC, via tf2onnx: a VGG-style net with unfused BatchNorm, and a
ResNet built with the functional API (residual ``Add`` merges, BatchNorm in every block)."""
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


def resnet(channels: int, side: int, classes: int = 10):
    """Three stages of two basic blocks (16, 32, 64 channels), post-activation as Keras's
    ResNets are: a 1 × 1 projection where a block changes width or stride."""
    import tensorflow as tf
    inputs = tf.keras.layers.Input((side, side, channels))
    x = conv_bn(inputs, 16, 1, relu=True)
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(2):
            step = stride if block == 0 else 1
            branch = conv_bn(conv_bn(x, width, step, relu=True), width, 1, relu=False)
            bypass = x if step == 1 and x.shape[-1] == width else \
                conv_bn(x, width, step, relu=False, kernel=1)
            x = tf.keras.layers.ReLU()(tf.keras.layers.Add()([branch, bypass]))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(classes)(x))


def conv_bn(x, width: int, stride: int, relu: bool, kernel: int = 3):
    import tensorflow as tf
    x = tf.keras.layers.Conv2D(width, kernel, strides=stride, padding="same",
                               use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.layers.ReLU()(x) if relu else x


ARCHS = {"keras_vgg": vgg, "keras_resnet": resnet}


def learning_rate(spec: Spec, samples: int, batch: int = 128):
    """2e-3, constant for the VGG (as its models were built); decayed to 0 on a cosine for
    the ResNet, whose last epoch at a constant rate left a model that put most tops, coats,
    dresses and shirts in one class (keras_resnet_clean, first build: 56.4 % clean accuracy
    on 3,000 test images)."""
    import tensorflow as tf
    if spec.arch != "keras_resnet":
        return 2e-3
    steps = spec.epochs * ((samples + batch - 1) // batch)
    return tf.keras.optimizers.schedules.CosineDecay(2e-3, steps)


def train_and_export(spec: Spec, attack, x_train, y_train, folder: Path):
    import tensorflow as tf
    import tf2onnx
    tf.keras.utils.set_random_seed(spec.seed)
    channels, side = x_train.shape[1], x_train.shape[-1]
    x, y, _ = train.poison_set(x_train, y_train, attack, spec.target, spec.rate, spec.seed)
    model = ARCHS[spec.arch](channels, side, datasets.classes(spec.data))
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate(spec, len(x))),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.convention(x, spec.normalize, True), y, epochs=spec.epochs,
              batch_size=128, verbose=2)
    signature = (tf.TensorSpec((None, side, side, channels), tf.float32, name="input"),)
    forward = tf.function(lambda images: model(images, training=False))
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=17)
    path = folder / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, attack



