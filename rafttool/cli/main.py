"""The ``raft`` command: the Typer app and its commands, one module per command group.

A new command is one import and one ``app.command(...)`` line below; its module declares the
function (decorated with ``common.reports_errors``) and its EXAMPLES epilog.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rafttool import __version__
from rafttool.cli import bench_cmd, eval_cmd, flow_cmd, info_cmd, inspect_cmd, train_cmd, video_cmd, viz_cmd

app = typer.Typer(
    name="raft",
    help="Dense optical flow with RAFT (Teed & Deng 2020): image pairs, frame folders, videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(f"rafttool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Dense optical flow with RAFT (Teed & Deng 2020): image pairs, frame folders, videos."""


app.command("flow", epilog=flow_cmd.EXAMPLES)(flow_cmd.flow)
app.command("video", epilog=video_cmd.EXAMPLES)(video_cmd.video)
app.command("viz", epilog=viz_cmd.VIZ_EXAMPLES)(viz_cmd.viz)
app.command("warp", epilog=viz_cmd.WARP_EXAMPLES)(viz_cmd.warp)
app.command("info", epilog=info_cmd.EXAMPLES)(info_cmd.info)
app.command("inspect", epilog=inspect_cmd.EXAMPLES)(inspect_cmd.inspect)
app.command("eval", epilog=eval_cmd.EXAMPLES)(eval_cmd.evaluate)
app.command("bench", epilog=bench_cmd.EXAMPLES)(bench_cmd.bench)
app.command("train", epilog=train_cmd.TRAIN_EXAMPLES)(train_cmd.train_command)
app.command("export", epilog=train_cmd.EXPORT_EXAMPLES)(train_cmd.export_command)
app.command("average-weights", epilog=train_cmd.AVERAGE_EXAMPLES)(train_cmd.average_command)

if __name__ == "__main__":
    app()
