"""embedrank.errors: one family for every error and warning the package raises on purpose."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

import embedrank
from embedrank import errors
from embedrank.apps import cli

PACKAGE = Path(embedrank.__file__).parent
# Built-ins the package may still raise itself: a bug or broken invariant (RuntimeError,
# AssertionError), an abstract method, module __getattr__, and what the OS reported (OSError).
ALLOWED_BUILTINS = {"RuntimeError", "NotImplementedError", "AttributeError", "OSError", "StopIteration",
                    "KeyboardInterrupt", "SystemExit", "AssertionError"}
BUILTIN_EXCEPTIONS = {name for name in dir(__builtins__ if isinstance(__builtins__, dict) else __builtins__)
                      if name.endswith(("Error", "Exception", "Warning"))} | {"ValueError", "TypeError", "KeyError"}
EXPECTED_BUILTIN = {
    errors.InvalidValueError: ValueError, errors.InvalidTypeError: TypeError, errors.UnknownIdError: KeyError,
    errors.MissingFileError: FileNotFoundError, errors.ExistingPathError: FileExistsError,
    errors.FormatError: ValueError, errors.IndexFormatError: ValueError, errors.ModelFolderError: ValueError,
    errors.RetrieverFormatError: ValueError, errors.SourceModelError: ValueError,
    errors.MissingDependencyError: ImportError, errors.EnvironmentSettingError: ImportError,
    errors.ExportError: RuntimeError, errors.NotFittedError: ValueError,
    errors.TruncationWarning: UserWarning, errors.ExportAccuracyWarning: UserWarning,
    errors.AttentionFallbackWarning: RuntimeWarning,
}


def test_every_class_is_in_the_family_and_its_builtin():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.EmbedrankError), name
    for cls, builtin in EXPECTED_BUILTIN.items():
        assert issubclass(cls, builtin), (cls, builtin)
    assert embedrank.EmbedrankError is errors.EmbedrankError


def test_unknown_id_error_reads_as_a_sentence():
    # KeyError's str() quotes its argument; the family's message is meant to be printed as is
    assert str(errors.UnknownIdError("no document with id 'x'")) == "no document with id 'x'"


def _raised_names(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                yield node.lineno, exc.id
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn" and len(node.args) >= 2:
            category = node.args[1]
            if isinstance(category, ast.Name):
                yield node.lineno, category.id


def test_no_module_raises_a_bare_builtin():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, name in _raised_names(ast.parse(path.read_text(encoding="utf-8"))):
            if name in BUILTIN_EXCEPTIONS and name not in ALLOWED_BUILTINS:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} raises {name}")
    assert not offenders, "raise the embedrank.errors class instead:\n" + "\n".join(offenders)


def test_the_family_is_caught_by_the_builtin_callers_knew():
    with pytest.raises(ValueError):
        embedrank.kernels.normalize([[1.0, float("nan")]])
    with pytest.raises(embedrank.EmbedrankError):
        embedrank.kernels.normalize([[1.0, float("nan")]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("cut", errors.TruncationWarning)
    assert issubclass(caught[0].category, UserWarning)


def _run_cli_with(handler, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["eval", "--run", "r", "--qrels", "q"])
    args.handler = handler
    original = cli.build_parser
    try:
        cli.build_parser = lambda: type("P", (), {"parse_args": staticmethod(lambda argv: args)})()
        return cli.main([])
    finally:
        cli.build_parser = original


def test_cli_prints_a_user_error_as_one_line(capsys):
    def handler(args):
        raise errors.InvalidValueError("k must be >= 1, got 0")

    assert _run_cli_with(handler, capsys) == 2
    err = capsys.readouterr().err
    assert err.strip() == "embedrank eval: error: k must be >= 1, got 0"


def test_cli_lets_a_bug_keep_its_traceback(capsys):
    def handler(args):
        raise ValueError("a bug inside embedrank, not the user's input")

    with pytest.raises(ValueError, match="a bug inside embedrank"):
        _run_cli_with(handler, capsys)


def test_document_text_refuses_what_it_would_have_to_coerce():
    from embedrank.utils.documents import document_text

    assert document_text({"title": "T", "text": "body"}) == "T body"
    for bad in ({"text": None}, {"text": 3}, {"title": 1, "text": "x"}):
        with pytest.raises(errors.InvalidTypeError, match="must be a str"):
            document_text(bad)
