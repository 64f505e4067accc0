"""The finetune and train-reranker commands on a tiny BEIR folder (a parser built here)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from embedrank.retrieval.fusion import FUSION_WEIGHTS

from embedrank.apps.train_commands import register


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedrank")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


def test_importing_the_commands_does_not_import_torch():
    code = ("import sys, embedrank, embedrank.train, embedrank.apps.train_commands, embedrank.train.mining, "
            "embedrank.train.data; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_finetune_writes_an_encoder_folder(minilm_dir, tiny_beir, tmp_path, capsys):
    import embedrank

    out = tmp_path / "ft"
    status = _run(["finetune", "--model", str(minilm_dir), "--data", str(tiny_beir), "--split", "train",
                   "--eval-split", "test", "--out", str(out), "--epochs", "2", "--batch-size", "4",
                   "--query-max-length", "16", "--document-max-length", "24", "--dev-fraction", "0.25",
                   "--range-min", "0", "--range-max", "5", "--no-optimize", "--no-quantize", "--quiet"])
    assert status == 0
    assert capsys.readouterr().out.strip() == str(out)
    encoder = embedrank.Encoder.load(out)
    assert encoder.config.pooling == "mean" and encoder.max_seq_length == 256
    assert encoder.encode(["a test"]).shape == (1, 384)
    report = json.loads((out / "training.json").read_text())
    assert len(report["history"]) == 2 and {"dev", "test"} <= set(report["history"][0]["metrics"])
    assert report["mining"]["queries"] == 6  # 8 train queries, 2 held out as dev


def test_train_reranker_writes_a_cross_encoder_folder(minilm_dir, tiny_beir, tmp_path):
    import embedrank

    out = tmp_path / "reranker"
    status = _run(["train-reranker", "--model", str(minilm_dir), "--data", str(tiny_beir), "--out", str(out),
                   "--batch-size", "4", "--num-negatives", "1", "--max-seq-length", "48", "--max-steps", "1",
                   "--range-min", "0", "--range-max", "5", "--eval-candidates", "5", "--no-optimize",
                   "--no-quantize", "--quiet"])
    assert status == 0
    reranker = embedrank.CrossEncoder.load(out)
    assert reranker.predict([("q", "d")]).shape == (1,)
    report = json.loads((out / "training.json").read_text())
    assert report["history"][0]["metrics"]["dev"]["ndcg@10"] >= 0
    # the fusion weight for Retriever(first_stage_weight=...), chosen on the dev queries
    fusion = report["fusion"]
    assert fusion["first_stage_weight"] in FUSION_WEIGHTS and fusion["queries"] >= 1
    assert fusion["fused_ndcg@10"][str(fusion["first_stage_weight"])] == max(fusion["fused_ndcg@10"].values())
    assert 0 <= fusion["first_stage_ndcg@10"] <= 1


def test_random_negatives_and_no_dev(minilm_dir, tiny_beir, tmp_path):
    out = tmp_path / "ft"
    assert _run(["finetune", "--model", str(minilm_dir), "--data", str(tiny_beir), "--out", str(out),
                 "--negatives", "random", "--dev-fraction", "0", "--max-steps", "1", "--batch-size", "4",
                 "--query-max-length", "16", "--document-max-length", "24", "--no-optimize", "--no-quantize",
                 "--quiet"]) == 0
    report = json.loads((out / "training.json").read_text())
    assert report["mining"] is None and report["best_dev_ndcg@10"] is None and report["best_epoch"] == 1


@pytest.mark.parametrize("extra, error, message", [
    (["--split", "nope"], ValueError, "unknown split 'nope'"),
    (["--range-min", "9", "--range-max", "3"], ValueError, "--range-max \\(3\\) must be greater"),
    (["--matryoshka-dims", "384,x"], ValueError, "comma-separated integers"),
    (["--matryoshka-dims", "512"], ValueError, "exceed the model's dimension"),
])
def test_bad_inputs(minilm_dir, tiny_beir, tmp_path, extra, error, message):
    with pytest.raises(error, match=message):
        _run(["finetune", "--model", str(minilm_dir), "--data", str(tiny_beir), "--out", str(tmp_path / "o"),
              "--quiet", "--max-steps", "1", "--negatives", "random", *extra])


def test_out_not_empty(minilm_dir, tiny_beir, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(["finetune", "--model", str(minilm_dir), "--data", str(tiny_beir), "--out", str(tmp_path / "o")])


def test_missing_data_folder(minilm_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="BEIR dataset folder not found"):
        _run(["finetune", "--model", str(minilm_dir), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
              "--quiet"])


@pytest.mark.parametrize("argv", [
    ["finetune", "--model", "m", "--data", "d", "--out", "o", "--lr", "-1"],
    ["finetune", "--model", "m", "--data", "d", "--out", "o", "--epochs", "0"],
    ["finetune", "--model", "m", "--data", "d", "--out", "o", "--dev-fraction", "1.5"],
    ["train-reranker", "--model", "m", "--data", "d", "--out", "o", "--loss", "hinge"],
    ["finetune", "--data", "d", "--out", "o"],
])
def test_bad_arguments_are_argparse_errors(argv):
    with pytest.raises(SystemExit) as raised:
        _parser().parse_args(argv)
    assert raised.value.code == 2
