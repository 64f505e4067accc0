"""The head of a bi-encoder after its graph: pooling, Dense layers and normalization.

sentence-transformers runs ``Transformer -> Pooling -> [Dense ...] -> [Normalize]``; an
exported graph gives the Transformer's token states [batch, tokens, hidden] and this module
does the rest in numpy, as sentence-transformers' Pooling and Dense modules define it. The
C++ kernels keep the hot paths (mean and CLS pooling with no Dense); the other modes are here.

Pooling modes (sentence-transformers' names) for right-padded batches, the only kind embedrank
builds (masks are 1 for a text's tokens, then 0):

* ``mean``: masked mean; ``mean_sqrt_len_tokens``: masked sum / sqrt(token count);
* ``cls``: the first pooled token (sentence-transformers takes the first position whose mask
  is 1, which differs from position 0 only when the prompt is excluded from pooling);
* ``lasttoken``: the last token of the text (its mask's last 1), what decoder embedders
  (Qwen3-Embedding, e5-mistral) use: in a causal model only the last token has seen the text;
* ``weightedmean``: positions weighted 1, 2, 3... from the first token (SGPT);
* ``max``: the largest value per dimension over the tokens.

``include_prompt=False`` (INSTRUCTOR-style Pooling) leaves the first ``prompt_length`` tokens
out of the pooling mask, prompt_length being the prompt's tokens without a trailing special
token, as sentence-transformers counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedrank.errors import InvalidValueError

__all__ = ["ACTIVATIONS", "POOLINGS", "DenseLayer", "Head", "load_dense", "pool_tokens"]

POOLINGS = ("mean", "cls", "lasttoken", "weightedmean", "max", "mean_sqrt_len_tokens")

# Dense activations by their torch.nn class name (sentence-transformers stores the class path).
ACTIVATIONS = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0.0),
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


@dataclass(frozen=True)
class DenseLayer:
    """One sentence-transformers Dense module: activation(x @ weight.T + bias) (+ a residual).

    weight: [out, in] float32; bias: [out] or None; residual: None (no residual), "identity"
    (in == out) or an [out, in] matrix (sentence-transformers' bias-free residual projection).
    """

    weight: np.ndarray
    bias: np.ndarray | None
    activation: str
    residual: np.ndarray | str | None = None

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x64 = np.asarray(x, dtype=np.float64)
        y = x64 @ self.weight.T.astype(np.float64)
        if self.bias is not None:
            y += self.bias
        y = ACTIVATIONS[self.activation](y)
        if isinstance(self.residual, str):
            y = y + x64
        elif self.residual is not None:
            y = y + x64 @ self.residual.T.astype(np.float64)
        return y


def pool_tokens(hidden: np.ndarray, mask: np.ndarray, pooling: str, prompt_length: int = 0) -> np.ndarray:
    """Pooled vectors [B, H] float64 (not normalized) from token states [B, T, H] and a
    right-padded mask [B, T]; `prompt_length` leading tokens are left out of the pool."""
    if pooling not in POOLINGS:
        raise InvalidValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    h = np.asarray(hidden, dtype=np.float64)
    keep = np.asarray(mask, dtype=bool)
    original = keep
    if prompt_length:
        keep = keep.copy()
        keep[:, :prompt_length] = False
    m = keep[..., None].astype(np.float64)
    if pooling in ("mean", "mean_sqrt_len_tokens"):
        count = np.maximum(m.sum(axis=1), 1e-9)
        return (h * m).sum(axis=1) / (count if pooling == "mean" else np.sqrt(count))
    if pooling == "cls":
        first = keep.argmax(axis=1)  # the first pooled token (0 when none is)
        return h[np.arange(h.shape[0]), first]
    if pooling == "lasttoken":
        # the last pooled token; a row with none gives zeros (sentence-transformers multiplies by the mask)
        tokens = keep.shape[1]
        any_kept = keep.any(axis=1)
        last = np.where(any_kept, tokens - 1 - keep[:, ::-1].argmax(axis=1), tokens - 1)
        return h[np.arange(h.shape[0]), last] * any_kept[:, None]
    if pooling == "weightedmean":
        # weights 1, 2, 3... from the first token of the text (right padding: position 0)
        start = original.argmax(axis=1)
        weights = np.arange(1, h.shape[1] + 1, dtype=np.float64)[None, :] - start[:, None]
        w = m * weights[..., None]
        return (h * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)
    # max: -inf where masked, as sentence-transformers does
    return np.where(m > 0, h, -np.inf).max(axis=1)


@dataclass(frozen=True)
class Head:
    """Pooling, Dense layers and normalization, as embedrank.json describes them."""

    pooling: str = "mean"
    dense: tuple = ()
    include_prompt: bool = True

    @property
    def input_width(self) -> int | None:
        """The token states' width the first Dense expects (None without Dense)."""
        return self.dense[0].in_features if self.dense else None

    def __call__(self, hidden: np.ndarray, mask: np.ndarray, normalize: bool, prompt_length: int = 0) -> np.ndarray:
        """Final vectors [B, D] float32 from token states [B, T, H] and their right-padded mask."""
        pooled = pool_tokens(hidden, mask, self.pooling, 0 if self.include_prompt else prompt_length)
        return self.finish(pooled, normalize, apply_dense=True)

    def finish(self, pooled: np.ndarray, normalize: bool, apply_dense: bool) -> np.ndarray:
        """Pooled vectors [B, H] -> [B, D] float32: the Dense layers (unless a pooled graph already
        applied them) and, with `normalize`, unit L2 norm (torch's F.normalize: eps 1e-12)."""
        x = np.asarray(pooled, dtype=np.float64)
        if apply_dense:
            for layer in self.dense:
                x = layer(x)
        if normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x.astype(np.float32)


def load_dense(config) -> tuple:
    """The Dense layers a ModelConfig lists, read from their .npz files (weight [out, in], bias
    [out], residual [out, in] float32); ModelFolderError naming the file when one is missing,
    unreadable or of the wrong shape."""
    from embedrank.errors import ModelFolderError

    layers = []
    for i, entry in enumerate(config.dense):
        path = config.path / entry["file"]
        try:
            with np.load(path, allow_pickle=False) as arrays:
                found = {name: np.asarray(arrays[name], dtype=np.float32) for name in arrays.files}
        except FileNotFoundError:
            raise ModelFolderError(f"{path} (dense[{i}] in embedrank.json) is missing") from None
        except (OSError, ValueError, EOFError) as error:
            raise ModelFolderError(f"{path} (dense[{i}]) is not a readable .npz file: {error}") from None
        expected = (entry["out_features"], entry["in_features"])
        wants = {"weight": expected, **({"bias": expected[:1]} if entry["bias"] else {}),
                 **({"residual": expected} if entry["residual"] == "matrix" else {})}
        for name, shape in wants.items():
            if name not in found or found[name].shape != shape:
                got = found[name].shape if name in found else "missing"
                raise ModelFolderError(f"{path}: {name} should have shape {shape}, got {got}")
        if not all(np.isfinite(a).all() for a in found.values()):
            raise ModelFolderError(f"{path}: holds NaN or Inf")
        if entry["residual"] == "identity" and expected[0] != expected[1]:
            raise ModelFolderError(f"{path}: an identity residual needs in_features == out_features, got {expected}")
        residual = found.get("residual") if entry["residual"] == "matrix" else entry["residual"]
        layers.append(DenseLayer(found["weight"], found.get("bias"), entry["activation"], residual))
    return tuple(layers)
