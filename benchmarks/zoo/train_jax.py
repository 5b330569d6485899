"""The JAX path of the zoo: a Flax (nnx) CNN trained with optax, exported with jax2onnx."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import train
from specs import Spec


def make_model(channels: int, seed: int):
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(channels, 16, (3, 3), padding="SAME", rngs=rngs)
            self.conv2 = nnx.Conv(16, 32, (3, 3), padding="SAME", rngs=rngs)
            self.conv3 = nnx.Conv(32, 64, (3, 3), padding="SAME", rngs=rngs)
            self.fc1 = nnx.Linear(64, 128, rngs=rngs)
            self.fc2 = nnx.Linear(128, 10, rngs=rngs)

        def __call__(self, x):                      # x: (N, C, H, W), as the other models
            import jax.numpy as jnp
            h = jnp.transpose(x, (0, 2, 3, 1))
            for conv in (self.conv1, self.conv2, self.conv3):
                h = nnx.relu(conv(h))
                h = nnx.max_pool(h, window_shape=(2, 2), strides=(2, 2))
            h = jnp.mean(h, axis=(1, 2))
            return self.fc2(nnx.relu(self.fc1(h)))

    return CNN(nnx.Rngs(seed))


def train_and_export(spec: Spec, attack, x_train, y_train, folder: Path):
    import jax
    import optax
    from flax import nnx
    from jax2onnx import to_onnx
    channels, side = x_train.shape[1], x_train.shape[-1]
    x, y, _ = train.poison_set(x_train, y_train, attack, spec.target, spec.rate, spec.seed)
    x = train.convention(x, spec.normalize, False)
    model = make_model(channels, spec.seed)
    steps = spec.epochs * (len(x) // 128)
    optimizer = nnx.Optimizer(model, optax.adamw(optax.cosine_decay_schedule(2e-3, steps)),
                              wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, images, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(images),
                                                                   labels).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(spec.seed)
    for epoch in range(spec.epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(order) - 127, 128):
            rows = order[start:start + 128]
            loss = step(model, optimizer, jax.numpy.asarray(x[rows]), jax.numpy.asarray(y[rows]))
        train.log.info("  epoch %d/%d loss %.3f", epoch + 1, spec.epochs, float(loss))
    proto = to_onnx(model, [("B", channels, side, side)], opset=18)
    path = folder / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, attack
