"""`quant collect-importance`: the command over `quantcli.calibration.collect.collect_importance`.

cli/commands.py registers it with its own error mapping and stderr console (passed in, so this module never
imports cli/commands.py):

    app.command("collect-importance", cls=QuantCommand)(make_collect_command(_errors, _stderr))
"""

from typing import Annotated, Any, Callable, ContextManager, Optional

import typer


def make_collect_command(errors: Callable[[bool], ContextManager[None]], stderr: Callable[[], Any]) -> Callable[..., None]:
    """The Typer command function; `errors(debug)` maps library errors to one line and an exit
    status, `stderr()` is the console the summary line goes to."""

    def collect_importance(
        model: Annotated[str, typer.Argument(help="Hugging Face model folder or id (with --numpy-minilm: a "
                                                  ".safetensors file).")],
        text: Annotated[str, typer.Argument(help="Calibration text, one sentence a line.")],
        output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="The statistics file to write "
                                            "(.safetensors).")],
        gram: Annotated[bool, typer.Option("--gram", help="Also store NAME.gram, the [in, in] mean of x x^T.")] = False,
        sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Also store NAME.sensitivity: the output's "
                                                  "relative change per unit of the tensor's relative error.")] = False,
        max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", metavar="N", help="Use the leading "
                                                          "sentences that fit in N tokens.", show_default=False)] = None,
        batch: Annotated[int, typer.Option("--batch", metavar="B", help="Sentences per forward pass.")] = 32,
        max_length: Annotated[Optional[int], typer.Option("--max-length", metavar="L", help="Tokens per sentence at "
                                                          "most (default: the model's).", show_default=False)] = None,
        numpy_minilm: Annotated[bool, typer.Option("--numpy-minilm", help="The numpy forward pass of a BERT encoder "
                                                   "like all-MiniLM-L6-v2 (no torch).")] = False,
        vocab: Annotated[Optional[str], typer.Option("--vocab", metavar="FILE", help="With --numpy-minilm: vocab.txt "
                                                     "(default: beside the model).", show_default=False)] = None,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    ) -> None:
        """Record calibration statistics for --importance by running the float model on sample text.

        Example: quant collect-importance model/ calib.txt -o imp.safetensors --sensitivity
        """
        with errors(debug):
            from ..calibration.collect import collect_importance as collect

            stderr().print(collect(model, text, output, gram=gram, sensitivity=sensitivity, max_tokens=max_tokens,
                                   batch=batch, max_length=max_length, numpy_minilm=numpy_minilm, vocab=vocab),
                           markup=False, soft_wrap=True)

    return collect_importance
