"""OnnxModel: what an exported model run with ONNX Runtime is, whatever its head.

It owns the model folder's config, the session (provider, threads, the attention rewrite),
the tokenizer, the input checks and the length-sorted batch loop. Its subclasses add only
their head: :class:`~embedrank.models.encoder.Encoder` pools token states into vectors,
:class:`~embedrank.models.cross_encoder.CrossEncoder` reads logits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from embedrank.errors import InvalidValueError, ModelFolderError
from embedrank.models.folder import ModelConfig
from embedrank.models.tokenization import TextTokenizer, length_sorted_batches
from embedrank.runtime import sessions
from embedrank.utils.progress import progress_bar
from embedrank.utils.threads import check_num_threads

__all__ = ["MODEL_INPUTS", "OnnxModel"]


# The inputs an exported graph may take, each [batch, tokens] int64.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxModel:
    """An embedrank model folder of kind `KIND` opened on ONNX Runtime (see the module docstring).

    variant: the graph file to run (see ModelConfig.variant_path); providers: None for CUDA
    when onnxruntime-gpu offers it, else the CPU; num_threads: intra-op threads (None: all
    cores this process may use); native_attention: None runs a CPU session's attention on
    embedrank's fused kernel where the graph allows (``native_attention_layers`` says how
    many layers), False never, True or an error (see embedrank.runtime.attention_fusion);
    bf16_attention: True runs that fused attention's two products in bf16 (see
    embedrank.kernels.attention; it needs AVX512-BF16, else an error names it);
    ``bf16_attention_layers`` says how many layers do. Off by default: on all-MiniLM-L6-v2
    int8 it gave +7% documents/s, but SciFact's NDCG@10 moved by up to 0.009, beyond the
    0.005 that int8 is allowed (benchmarks/results/bf16_attention.md).

    One instance may be shared by any number of threads: the tokenizers are never
    reconfigured after load (see embedrank.models.tokenization) and onnxruntime's run is
    thread-safe, so concurrent calls run side by side and give single-threaded results.
    """

    KIND: ClassVar[str] = ""
    # the embedrank.json field that _output_width reads, for error messages
    _width_field: ClassVar[str] = "dimension"
    # what to use instead when a folder holds the other kind of model
    OTHER_KIND_HINT: ClassVar[str] = ""

    def __init__(self, config: ModelConfig, variant: str = "fp32", providers=None, num_threads: int | None = None,
                 native_attention: bool | None = None, bf16_attention: bool = False):
        if config.kind != self.KIND:
            raise InvalidValueError(f"{config.path} holds a {config.kind!r} model; {self.OTHER_KIND_HINT}")
        self.config = config
        self.variant = variant
        self.num_threads = check_num_threads(num_threads)
        model_path = config.variant_path(variant)
        self.session, self.native_attention_layers = sessions.make_session(model_path, providers, self.num_threads,
                                                                             native_attention, bf16=variant == "bf16",
                                                                             bf16_attention=bf16_attention)
        self.bf16_attention_layers = self.native_attention_layers if bf16_attention else 0
        # the provider that runs the graph decides the batching: token cap and padding granularity
        self._provider = self.session.get_providers()[0]
        self._pad_multiple = sessions.pad_multiple(self._provider)
        self.tokenizer = TextTokenizer(config.tokenizer_path, config.max_seq_length)
        self._input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self._input_names) - set(MODEL_INPUTS)
        if unknown:
            raise InvalidValueError(f"{model_path} has unexpected inputs {sorted(unknown)}")
        output = self.session.get_outputs()[0]
        self._check_output(output, model_path)
        self._output_name = output.name
        self._check_runs_at_max_length(model_path)

    def _check_output(self, output, model_path) -> None:
        """Raises when the graph's first output does not fit this head (a subclass hook)."""

    def _output_width(self) -> int:
        """The size that embedrank.json promises for the output's last axis (a subclass hook;
        0: unchecked)."""
        return 0

    def _check_runs_at_max_length(self, model_path) -> None:
        """Runs one text of max_seq_length tokens, so that an embedrank.json whose
        max_seq_length is beyond the model's position embeddings, or whose dimension is not the
        output's, fails here with the field named, not at the first long text with an
        onnxruntime error or a numpy shape error. Costs one batch-1 run at full length (about
        the time of encoding one long text)."""
        length = self.config.max_seq_length
        vocab = self.tokenizer.tokenizer.get_vocab_size()
        # any id but padding: some models derive positions from the non-padding tokens
        token = next(i for i in (100, 101, 1, 2) if i != self.tokenizer.pad_id and i < max(vocab, 3))
        feeds = {"input_ids": np.full((1, length), token, dtype=np.int64),
                 "attention_mask": np.ones((1, length), dtype=np.int64),
                 "token_type_ids": np.zeros((1, length), dtype=np.int64)}
        config_path = self.config.path / "embedrank.json"
        try:
            output = self.session.run([self._output_name], {name: feeds[name] for name in self._input_names})[0]
        except Exception as error:  # onnxruntime raises its own exception types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelFolderError(f"{config_path}: max_seq_length={length} does not run on {model_path.name} (is it "
                                   f"above the model's position embeddings?): {first_line}") from None
        width = self._output_width()
        if width and output.shape[-1] != width:
            raise ModelFolderError(f"{config_path}: {self._width_field} is {width} but {model_path.name} gives "
                                   f"{output.shape[-1]} values per text (output shape {list(output.shape)})")

    @classmethod
    def load(cls, path: str | os.PathLike, variant: str = "fp32", providers=None, num_threads: int | None = None,
             native_attention: bool | None = None, **options):
        """Opens an embedrank model folder (see the class docstring for the arguments)."""
        return cls(ModelConfig.load(path), variant=variant, providers=providers, num_threads=num_threads,
                   native_attention=native_attention, **options)

    # -- properties ----------------------------------------------------------------------
    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    # -- the batch loop --------------------------------------------------------------------
    def _token_budget(self, max_tokens_per_batch) -> int | None:
        """max_tokens_per_batch ("auto", None or an int) checked and resolved for this provider."""
        return sessions.token_budget(max_tokens_per_batch, self._provider)

    def _run_batches(self, encodings: Sequence, out: np.ndarray, batch_size: int, max_tokens_per_batch,
                     show_progress: bool | None, desc: str, head: Callable) -> np.ndarray:
        """Fills out[i] for every encoding, in batches of similar token length.

        max_tokens_per_batch: an int or None, as resolved by _token_budget.
        head(model_output, padded_batch) -> rows of `out`.
        """
        batches = length_sorted_batches([len(e.ids) for e in encodings], batch_size, max_tokens_per_batch)
        progress = progress_bar(len(encodings), show_progress, desc)
        try:
            for rows in batches:
                output, batch = self._run_batch([encodings[i] for i in rows])
                out[rows] = head(output, batch)
                progress.update(len(rows))
        finally:
            progress.close()
        return out

    def _run_batch(self, encodings: Sequence):
        """(the graph's first output, the padded TokenizedBatch) for one batch of encodings."""
        batch = self.tokenizer.pad(encodings, self._pad_multiple)
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "token_type_ids": batch.token_type_ids}
        output = self.session.run([self._output_name], {name: feeds[name] for name in self._input_names})[0]
        return output, batch
