"""The `sw` command: a thin typer app. Each command parses its arguments, calls the library,
renders and exits: 0 ok (warnings allowed), 1 problems in a spec, 2 usage or unreadable file.

Library modules are imported inside the commands, so `sw check` and `sw fmt` load only the
front end (never torch).
"""

from __future__ import annotations

import enum
import json
import os
import sys
from pathlib import Path

import typer

from stackwise_dsl.version import __version__

app = typer.Typer(
    name="sw",
    help="Declare, check and run progressive, stack-wise transformer training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OK, PROBLEMS, USAGE = 0, 1, 2


class Format(str, enum.Enum):
    text = "text"
    json = "json"


SetOption = typer.Option(
    [], "--set", "-s", metavar="PATH=VALUE", help="Override a field or let, e.g. model.d_model=512."
)


def main() -> None:
    app()


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(f"stackwise-dsl {__version__}")
        raise typer.Exit(OK)


@app.command()
def check(
    files: list[Path] = typer.Argument(..., help="Spec files to check."),
    overrides: list[str] = SetOption,
    format: Format = typer.Option(Format.text, "--format", help="text for people, json for tools."),
    no_memo: bool = typer.Option(False, "--no-memo", help="Check afresh; remember nothing."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Check for a run on N processes in all (sw run --nproc)."
    ),
) -> None:
    """Report every problem in each spec: syntax, names, types, shapes, schedules."""
    from stackwise_dsl.cli import check_memo
    from stackwise_dsl.machine.probe import host_key

    host = [*host_key(), nproc]
    results = []
    for f in files:
        result = None if no_memo else check_memo.lookup(str(f), overrides, host)
        if result is None:
            _require_valid_overrides(overrides)
            result, read = _check_afresh(f, overrides, host)
            if not (no_memo or result["unreadable"]):
                check_memo.store(str(f), overrides, host, read, result)
        results.append(result)
    out = _Output()
    if format is Format.json:
        out.json({"files": [{k: r[k] for k in _JSON_KEYS} for r in results]})
    else:
        for r in results:
            for line in r["lines"]:
                out.line(line)
        for r in results:
            out.line(((f"{r['file']}: ", "bold"), _summary_segment(r)))
    if any(r["unreadable"] for r in results):
        raise typer.Exit(USAGE)
    raise typer.Exit(PROBLEMS if any(r["errors"] for r in results) else OK)


_JSON_KEYS = ("file", "ok", "errors", "warnings", "diagnostics")


def _check_afresh(path: Path, overrides: list[str], host: list) -> tuple[dict, tuple[str, ...]]:
    """Run the front end; the result in the form the memo keeps and the CLI prints."""
    from stackwise_dsl import diagnostics as diag
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.machine.host import Host

    cuda, bf16, tensorboard, processes = host
    host_ = Host(cuda=cuda, cpu_bf16=bf16, tensorboard=tensorboard, processes=processes)
    report = check_file(path, overrides, host=host_)
    lines = []
    for d in report.diagnostics:
        lines += [[list(seg) for seg in line] for line in diag.render(d, report.sources)]
        lines.append([])
    errors = sum(d.is_error for d in report.diagnostics)
    result = {
        "file": report.name,
        "ok": report.ok,
        "unreadable": report.unreadable,
        "errors": errors,
        "warnings": len(report.diagnostics) - errors,
        "diagnostics": [diag.to_json(d) for d in report.diagnostics],
        "lines": lines,
    }
    return result, report.files


@app.command()
def fmt(
    files: list[Path] = typer.Argument(..., help="Spec files to format in place; - for stdin."),
    check: bool = typer.Option(
        False, "--check", help="Change nothing; exit 1 if a file would change."
    ),
    diff: bool = typer.Option(
        False, "--diff", help="Show the changes as a unified diff; change nothing."
    ),
) -> None:
    """Rewrite specs in the one canonical style; comments are kept."""
    from stackwise_dsl.cli import formatting
    from stackwise_dsl.machine.outputs import OutputError

    out = _Output()
    write = not (check or diff)
    results = [formatting.format_path(str(f)) for f in files]
    status = OK
    for r in results:
        if r.error is not None:
            out.line(((f"error: {r.error}", "bold red"),))
            status = max(status, USAGE)
        elif r.diagnostics:
            _print_diagnostics(out, r.diagnostics, r.sources)
            status = max(status, PROBLEMS)
        elif r.path == "-" and write:
            sys.stdout.write(r.formatted)  # stdin formats to stdout
        elif r.changed:
            if diff:
                out.raw(r.diff())
            if check:
                status = max(status, PROBLEMS)
            if write:
                try:
                    formatting.write_atomically(r.path, r.formatted)
                except (OSError, OutputError) as e:
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    out.line(((f"error: cannot write {r.path}: {why}", "bold red"),))
                    status = max(status, USAGE)
    if not (write and [r.path for r in results] == ["-"]):
        out.line(((formatting.summary(results, write=write), "bold"),))
    raise typer.Exit(status)


@app.command()
def plan(
    file: Path = typer.Argument(..., help="The spec to lower."),
    overrides: list[str] = SetOption,
    format: Format = typer.Option(Format.text, "--format", help="text for people, json for tools."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Memory and traffic per process, for a run on N processes."
    ),
) -> None:
    """Show the plan: every stage, which stacks train or stay frozen, in which precision, its
    training FLOPs and its peak memory per process."""
    from stackwise_dsl.lower import show

    _require_valid_overrides(overrides)
    plan_ = _lower_or_exit(file, overrides, processes=nproc)
    out = _Output()
    if format is Format.json:
        out.json(show.plan_json(plan_, nproc))
        raise typer.Exit(OK)
    from rich.console import Console

    console = Console(highlight=False, width=200 if not sys.stdout.isatty() else None)
    console.print(show.headline(plan_))
    console.print(show.stage_table(plan_, nproc))
    console.print(show.totals(plan_))
    console.print(show.memory_lines(plan_, nproc))
    shared = show.sharding(plan_)
    if shared is not None:
        console.print(shared)
    raise typer.Exit(OK)


@app.command()
def compile(
    file: Path = typer.Argument(..., help="The spec to compile."),
    overrides: list[str] = SetOption,
    out: Path | None = typer.Option(
        None, "--output", "-o", help="The script to write (default: standard output)."
    ),
) -> None:
    """Emit a standalone training script that trains what `sw run` trains."""
    from stackwise_dsl.emit.script import render

    _require_valid_overrides(overrides)
    lowered = _lower_or_exit(file, overrides, lowered=True)
    if (lowered.plan.model.pretrained or lowered.plan.model.embedding) is not None:
        said = (
            "error: sw compile does not yet write a script for a model that starts from a "
            "pretrained directory (model.pretrained, model.embedding): train it with sw run"
        )
        typer.echo(said, err=True)
        raise typer.Exit(PROBLEMS)
    text = render(
        lowered.plan,
        spec_text=_exact_text(file),
        spec_file=str(file),
        overrides=overrides,
        script_name=out.name if out is not None else "train.py",
        origins={k: v.describe(str(file)) for k, v in lowered.origins.items()},
    )
    if out is None or str(out) == "-":
        sys.stdout.write(text)
        raise typer.Exit(OK)
    from stackwise_dsl.cli.formatting import write_atomically
    from stackwise_dsl.machine.outputs import OutputError

    if os.path.realpath(out) == os.path.realpath(file):
        typer.echo(f"error: {out} is the spec being compiled: name another file", err=True)
        raise typer.Exit(USAGE)
    try:
        write_atomically(str(out), text, new_mode=0o755)  # a script: executable
    except (OSError, OutputError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        typer.echo(f"error: cannot write {out}: {why}", err=True)
        raise typer.Exit(USAGE) from None
    typer.echo(f"{out}: a training script for {file} ({len(text.splitlines()):,} lines)")
    raise typer.Exit(OK)


def _lower_or_exit(
    file: Path,
    overrides: list[str],
    *,
    lowered: bool = False,
    for_run: bool = False,
    processes: int = 1,
):
    """Check the spec (diagnostics and exit 1 on errors) and lower it to a plan (with where
    its values came from when `lowered`: a `lower.Lowered`). The files its data names are
    looked at only for a run (`for_run`), which also refuses the warnings a run cannot start
    with (SW604: its data is not here); a plan or a script may be made where the data is not."""
    import attrs

    from stackwise_dsl.codes import CODES
    from stackwise_dsl.data import DataError, lower_spec
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.machine.host import Host

    host = Host.detect() if for_run else attrs.evolve(Host.detect(), data=())
    report = check_file(file, overrides, host=attrs.evolve(host, processes=processes))
    refused = for_run and any(CODES[d.code].run_refuses for d in report.diagnostics)
    if not report.ok or refused:
        _print_diagnostics(_Output(), report.diagnostics, report.sources)
        if report.ok:
            codes = {d.code for d in report.diagnostics if CODES[d.code].run_refuses}
            why = ("without the data named above" if codes == {"SW604"}
                   else "on this machine: see the warnings above")  # fmt: skip
            typer.echo(f"error: the run cannot start {why}", err=True)
        raise typer.Exit(USAGE if report.unreadable else PROBLEMS)
    try:
        result = lower_spec(report.spec, name=Path(file).stem)
    except DataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(PROBLEMS) from None
    return result if lowered else result.plan


class DeviceChoice(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def run(
    file: Path | None = typer.Argument(None, help="The spec to train (not with --resume)."),
    overrides: list[str] = SetOption,
    max_steps: int | None = typer.Option(
        None,
        "--max-steps",
        min=1,
        help="Stop every stage after N steps, at the learning rates of the full run.",
    ),
    trial_steps: int | None = typer.Option(
        None,
        "--trial-steps",
        min=1,
        help="Shorten every stage to N steps, its warmup and decay compressed to fit.",
    ),
    run_dir: str | None = typer.Option(
        None, "--run-dir", help="Where the run writes (default runs/<spec>)."
    ),
    resume: str | None = typer.Option(None, "--resume", help="Continue the run in this directory."),
    device: DeviceChoice | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines or tables."),
    format: Format = typer.Option(Format.text, "--format", help="json: a summary for scripts."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Processes on this machine (torchrun's --nproc-per-node)."
    ),
    nnodes: str | None = typer.Option(
        None, "--nnodes", help="Machines taking part: N or MIN:MAX (passed to torchrun)."
    ),
    node_rank: int | None = typer.Option(
        None, "--node-rank", min=0, help="This machine's place (passed to torchrun)."
    ),
    rdzv_endpoint: str | None = typer.Option(
        None, "--rdzv-endpoint", help="HOST:PORT where the machines meet (passed to torchrun)."
    ),
    rdzv_id: str | None = typer.Option(None, "--rdzv-id", help="The job's id (torchrun's)."),
) -> None:
    """Train a spec stage by stage (or continue a run with --resume); with --nproc N, on N
    processes (torch's elastic launcher; a plain `torchrun ... -m stackwise_dsl run` works too)."""
    from stackwise_dsl.cli import launch

    how = launch.Launch(nproc=nproc, nnodes=nnodes, node_rank=node_rank,
                        rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id)  # fmt: skip
    refused = launch.refusal(how)
    if refused is not None:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(USAGE)
    if how.several and launch.inside():
        typer.echo("error: --nproc and --nnodes start a launcher; this process is already one "
                   "of a launcher's: leave them out", err=True)  # fmt: skip
        raise typer.Exit(USAGE)
    if (file is None) == (resume is None):
        typer.echo("error: give a spec to run, or --resume RUN_DIR (not both)", err=True)
        raise typer.Exit(USAGE)
    if max_steps is not None and trial_steps is not None:
        typer.echo("error: give --max-steps (cut the run) or --trial-steps (compress it), not "
                   "both", err=True)  # fmt: skip
        raise typer.Exit(USAGE)
    if resume is not None and (overrides or max_steps is not None or trial_steps is not None):
        given = "--set" if overrides else "--max-steps" if max_steps else "--trial-steps"
        typer.echo(f"error: {given} cannot change a run being resumed: it goes on with the "
                   "plan it was started with", err=True)  # fmt: skip
        raise typer.Exit(USAGE)
    if resume is not None and run_dir is not None:
        typer.echo("error: --run-dir names a new run's directory; a resumed run goes on in its "
                   "own (--resume DIR)", err=True)  # fmt: skip
        raise typer.Exit(USAGE)
    for given, path in (("--run-dir", run_dir), ("--resume", resume)):
        if path is not None and not str(path).strip():
            typer.echo(f"error: {given} is empty: name a directory", err=True)
            raise typer.Exit(USAGE)
    from stackwise_dsl import runtime
    from stackwise_dsl.ir.enums import Device

    chosen = Device(device.value) if device else None
    show = not quiet and format is Format.text and launch.rank() == 0
    world, plan_ = runtime.World(), None
    try:
        if resume is not None:
            plan_ = runtime.load_plan(resume)
            if how.several:  # what every process would meet, said once before they start
                runtime.reopen(resume)  # a damaged checkpoint pointer; a finished run
                runtime.device_for(chosen or plan_.run.device)
                _refuse_unshared_batch(plan_, how)
                given = ["--resume", resume, *_passed(device, quiet, format)]
                raise typer.Exit(launch.launch(how, given, resume))
            world = _joined(plan_, chosen)
            with _view(plan_, show) as view:
                summaries = runtime.resume(resume, progress=view, device=chosen, world=world)
            where = resume
        else:
            _require_valid_overrides(overrides)
            size = how.world_size() or 1  # MIN:MAX machines: each process checks its share
            plan_ = _lower_or_exit(file, overrides, for_run=True,
                                   processes=size if launch.rank() == 0 else 1)  # fmt: skip
            plan_ = _adjust(plan_, max_steps, trial_steps, run_dir, chosen)
            if how.several:  # checked here once; the processes run it in the same directory
                runtime.device_for(plan_.run.device)
                given = [str(file), *[f"--set={o}" for o in overrides],
                         f"--run-dir={plan_.run.dir}"]  # fmt: skip
                given += [f"--max-steps={max_steps}"] if max_steps is not None else []
                given += [f"--trial-steps={trial_steps}"] if trial_steps is not None else []
                given += _passed(device, quiet, format)
                raise typer.Exit(launch.launch(how, given, plan_.run.dir))
            world = _joined(plan_, chosen)
            # every process writes where rank 0 chose (a later one would see its run there)
            plan_ = _in_dir(plan_, world.from_main(plan_.run.dir))
            info = {"spec": str(file), "overrides": overrides, "max_steps": max_steps,
                    "trial_steps": trial_steps, "processes": world.size}  # fmt: skip
            text = _exact_text(file)
            with _view(plan_, show) as view:
                summaries = runtime.run(plan_, Path(plan_.run.dir), spec_text=text, info=info,
                                        progress=view, world=world)  # fmt: skip
            where = plan_.run.dir
    except runtime.Complete as e:  # nothing to resume: say so, change nothing
        if launch.rank() != 0:
            raise typer.Exit(OK) from None
        if format is Format.json:
            _Output().json({"run_dir": str(resume), "complete": True, "message": str(e)})
        else:
            typer.echo(str(e))
        raise typer.Exit(OK) from None
    except KeyboardInterrupt:
        if launch.rank() == 0:
            where = resume or (plan_.run.dir if plan_ is not None else None)
            began = where is not None and (Path(where) / "plan.json").exists()
            typer.echo("interrupted" + (f"; continue with --resume {where}" if began else ""),
                       err=True)  # fmt: skip
        raise typer.Exit(130) from None
    except runtime.Elsewhere:  # rank 0 says what stopped the run, and exits with its status
        raise typer.Exit(OK) from None  # (a failure here would have the launcher stop it first)
    except runtime.RunError as e:
        who = f" (rank {world.rank} of {world.size})" if world.size > 1 else ""
        typer.echo(f"error{who}: {e}", err=True)
        raise typer.Exit(PROBLEMS) from None
    except RuntimeError as e:  # another process stopped while this one waited on it
        if world.size == 1 or not _peer_gone(e):
            raise
        raise typer.Exit(PROBLEMS) from None  # that process says why (the launcher names it)
    finally:
        world.close()
    if world.main:
        _report_run(summaries, where, quiet, format)


def _peer_gone(e: RuntimeError) -> bool:
    import torch.distributed as dist

    said = str(e)
    return isinstance(e, dist.DistError) or any(
        x in said for x in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )


def _passed(device, quiet: bool, format: Format) -> list[str]:
    """The options every process of a launched run is given as the user gave them."""
    out = [f"--device={device.value}"] if device is not None else []
    return out + (["--quiet"] if quiet else []) + [f"--format={format.value}"]


def _refuse_unshared_batch(plan_, how) -> None:
    """A resumed run's batch is its own: only the number of processes can change."""
    size, batch = how.world_size(), plan_.data.batch
    if size is not None and batch % size:
        fits = ", ".join(str(k) for k in range(1, batch + 1) if batch % k == 0)
        typer.echo(f"error: the run's data.batch is {batch}, which {size} processes cannot "
                   f"share equally: resume it on {fits} processes", err=True)  # fmt: skip
        raise typer.Exit(USAGE)


def _joined(plan_, device):
    """This process's place among a launcher's (a world of one when it is alone)."""
    from stackwise_dsl import runtime
    from stackwise_dsl.core.world import joined
    from stackwise_dsl.ir.enums import Device

    chosen = device if device is not None else plan_.run.device
    return joined(cuda=runtime.device_for(chosen).type == "cuda" and chosen is not Device.CPU)


def _in_dir(plan_, directory: str):
    import attrs

    return attrs.evolve(plan_, run=attrs.evolve(plan_.run, dir=directory))


def _view(plan_, show: bool):
    """Progress bars on a terminal; a flushed plain line per logged step when stdout is a file
    or a pipe (nohup, a batch scheduler, `| tee`); nothing when not showing (-q, --format
    json: a context yielding None)."""
    import contextlib

    if not show:
        return contextlib.nullcontext(None)
    from stackwise_dsl.cli.run_view import PlainProgress, RichProgress

    return RichProgress(plan_) if sys.stdout.isatty() else PlainProgress(plan_, sys.stdout)


def _adjust(plan_, max_steps, trial_steps, run_dir, device):
    """The plan with the command line's caps and choices applied (saved with the run):
    `max_steps` cuts a longer stage, whose learning rates follow the full stage's schedule
    (`schedule_steps`); `trial_steps` shortens it, its schedule compressed to fit. A run
    named by --run-dir must go where it says; otherwise the spec's directory is used, or the
    first of `DIR-2`, `DIR-3`, ... that holds no run, so running a spec again keeps the last
    run."""
    import os

    import attrs

    stages = plan_.stages
    if max_steps is not None:
        stages = tuple(attrs.evolve(s, steps=max_steps, schedule_steps=s.schedule_steps or s.steps)
                       if s.steps > max_steps else s for s in stages)  # fmt: skip
    if trial_steps is not None:
        stages = tuple(attrs.evolve(s, steps=min(s.steps, trial_steps)) for s in stages)
    run_ = plan_.run
    if run_dir is not None:
        run_ = attrs.evolve(run_, dir=os.path.abspath(run_dir))
    else:
        base, n = run_.dir, 1
        while os.path.exists(os.path.join(run_.dir, "plan.json")):
            n += 1
            run_ = attrs.evolve(run_, dir=f"{base}-{n}")
    if device is not None:
        run_ = attrs.evolve(run_, device=device)
    return attrs.evolve(plan_, stages=stages, run=run_)


def _report_run(summaries, where, quiet: bool, format: Format) -> None:
    import attrs

    if format is Format.json:
        _Output().json({"run_dir": str(where), "stages": [attrs.asdict(s) for s in summaries]})
        raise typer.Exit(OK)
    if not quiet:
        from stackwise_dsl.cli.run_view import print_summary

        print_summary(summaries, sys.stdout)
    typer.echo(f"run written to {where}")
    raise typer.Exit(OK)


class ExportFormat(str, enum.Enum):
    text = "text"
    json = "json"
    hf = "hf"


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (written by `sw run`)."),
    out: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="The file to write (default RUN_DIR/model.safetensors); with --format hf, the "
        "directory.",
    ),
    format: ExportFormat = typer.Option(
        ExportFormat.text,
        "--format",
        help="text or json: our safetensors layout, said for people or for tools; hf: a "
        "Hugging Face directory transformers loads (Llama or GPT-2).",
    ),
) -> None:
    """Write a run's model, its LoRA adapters merged into the full-precision weights (never
    into a quantized copy): as plain fp32 safetensors, or as a Hugging Face model."""
    from stackwise_dsl import runtime
    from stackwise_dsl.runtime.merge import MergeError, export

    if format is ExportFormat.hf:
        _export_hf(run_dir, out)
    target = out if out is not None else run_dir / "model.safetensors"
    try:
        result = export(run_dir, target)
    except (runtime.RunError, MergeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(PROBLEMS) from None
    if format is ExportFormat.json:
        _Output().json(result)
        raise typer.Exit(OK)
    merged = ", ".join(result["merged"]) or "none"
    state = "end of" if result["stage_done"] else "during"
    typer.echo(
        f"{result['file']}: {result['parameters']:,} parameters from {result['checkpoint']} "
        f"({state} stage {result['stage']}); adapters merged: {merged}"
    )
    raise typer.Exit(OK)


def _export_hf(run_dir: Path, out: Path | None) -> None:
    from stackwise_dsl import runtime
    from stackwise_dsl.hf import HfError
    from stackwise_dsl.hf.export import export_hf
    from stackwise_dsl.runtime.merge import MergeError

    if out is None:
        typer.echo("error: --format hf writes a directory: name it with -o DIR", err=True)
        raise typer.Exit(USAGE)
    try:
        result = export_hf(run_dir, out)
    except (runtime.RunError, MergeError, HfError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(PROBLEMS) from None
    merged = ", ".join(result["merged"]) or "none"
    state = "end of" if result["stage_done"] else "during"
    family = {"llama": "Llama", "gpt2": "GPT-2"}[result["family"]]
    typer.echo(
        f"{result['directory']}: a {family} model of {result['layers']} "
        f"layer{'s' if result['layers'] != 1 else ''}, "
        f"{result['parameters']:,} parameters, from {result['checkpoint']} ({state} stage "
        f"{result['stage']}); adapters merged: {merged}"
    )
    raise typer.Exit(OK)


CheckpointOption = typer.Option(
    None,
    "--checkpoint",
    help="A stage number (its end), a checkpoint's name or path (default: the latest).",
)


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="A run directory (written by `sw run`)."),
    checkpoint: str | None = CheckpointOption,
    prompt: str | None = typer.Option(
        None,
        "--prompt",
        help="Text to continue; `<mask>` marks a place for a masked model to fill.",
    ),
    prompt_file: Path | None = typer.Option(
        None, "--prompt-file", help="Read the prompt from a file."
    ),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", help="Tokens to add (default 100 for CLM, to seq_len otherwise)."
    ),
    num_samples: int = typer.Option(1, "--num-samples", help="How many samples."),
    temperature: float = typer.Option(1.0, "--temperature", help="0: the most likely token."),
    top_k: int | None = typer.Option(None, "--top-k", help="Draw among the k most likely."),
    top_p: float | None = typer.Option(None, "--top-p", help="Draw within probability p."),
    seed: int = typer.Option(0, "--seed", help="Fixes every draw."),
    sampler: str | None = typer.Option(
        None,
        "--sampler",
        help="autoregressive (clm), fill (mlm), depth or fused (time as "
        "depth), ancestral or low_confidence (time as input).",
    ),
    steps: int | None = typer.Option(None, "--steps", help="Time steps (time as input)."),
    block: int | None = typer.Option(None, "--block", help="low_confidence's block length."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    format: Format = typer.Option(Format.text, "--format", help="json: samples for scripts."),
) -> None:
    """Generate text from a trained run: any stage's checkpoint, with the sampler its
    objective trained for."""
    if prompt is not None and prompt_file is not None:
        typer.echo("error: give --prompt or --prompt-file, not both", err=True)
        raise typer.Exit(USAGE)
    from stackwise_dsl import runtime
    from stackwise_dsl.use import load, read_text
    from stackwise_dsl.use.errors import UseError

    try:
        text = read_text(prompt_file) if prompt_file is not None else prompt or ""
        model = load(run_dir, checkpoint, device=device)
        out = model.sample(text, max_new_tokens=max_new_tokens, num_samples=num_samples,
                           temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                           sampler=sampler, steps=steps, block=block)  # fmt: skip
    except UseError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(USAGE) from None
    except runtime.RunError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(PROBLEMS) from None
    samples = [model.decode(row) for row in out.ids.tolist()]
    if format is Format.json:
        _Output().json({
            "run_dir": str(run_dir), "checkpoint": model.checkpoint.name,
            "stage": model.stage.number, "sampler": sampler or model.samplers[0],
            "prompt": text, "seed": seed, "network_calls": out.calls, "samples": samples,
        })  # fmt: skip
        raise typer.Exit(OK)
    for i, sample_ in enumerate(samples):
        if len(samples) > 1:
            typer.echo(f"--- sample {i + 1} ---")
        typer.echo(sample_)
    raise typer.Exit(OK)


@app.command(name="eval")
def eval_(
    run_dir: Path = typer.Argument(..., help="A run directory (written by `sw run`)."),
    data: Path | None = typer.Option(
        None, "--data", help="A text file to score (default: the run's validation windows)."
    ),
    checkpoint: str | None = CheckpointOption,
    all_stages: bool = typer.Option(False, "--all-stages", help="One row per finished stage."),
    windows: int | None = typer.Option(
        None,
        "--windows",
        help="Score the first N windows (default: all of --data; of the "
        "validation windows, those training scores).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    format: Format = typer.Option(Format.text, "--format", help="json: rows for scripts."),
) -> None:
    """Score a trained run: loss, perplexity and bits per byte (CLM), masked-token loss
    (MLM, and masked diffusion at five ratios), MDLM's bound (time as input)."""
    from stackwise_dsl import runtime
    from stackwise_dsl.use.errors import UseError
    from stackwise_dsl.use.evaluation import evaluate_run

    if checkpoint is not None and all_stages:
        typer.echo("error: give --checkpoint or --all-stages, not both", err=True)
        raise typer.Exit(USAGE)
    try:
        rows = evaluate_run(run_dir, data=data, checkpoint=checkpoint, all_stages=all_stages,
                            windows=windows, device=device)  # fmt: skip
    except UseError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(USAGE) from None
    except runtime.RunError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(PROBLEMS) from None
    if format is Format.json:
        _Output().json({"run_dir": str(run_dir), "rows": rows})
        raise typer.Exit(OK)
    from stackwise_dsl.cli.eval_view import eval_table

    for line in eval_table(rows):
        typer.echo(line)
    raise typer.Exit(OK)


class XAxis(str, enum.Enum):
    steps = "steps"
    tokens = "tokens"
    flops = "flops"
    seconds = "seconds"


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (written by `sw run`)."),
    x: XAxis = typer.Option(XAxis.steps, "--x", help="The axis: steps, tokens, flops or seconds."),
    out: Path | None = typer.Option(None, "-o", "--output", help="Write the plot here (.png)."),
    data: Path | None = typer.Option(
        None, "--data", help="Score every checkpoint of every run on this text file instead."
    ),
    windows: int | None = typer.Option(
        None, "--windows", help="With --data: score its first N windows (default: all)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (with --data)."),
    format: Format = typer.Option(Format.text, "--format", help="json: the curves for scripts."),
) -> None:
    """Validation loss of several runs against steps, tokens, FLOPs or seconds, every run
    scored on the same windows: their own evaluations when those scored the same windows
    the same way, or every checkpoint on one text with --data."""
    from stackwise_dsl import runtime
    from stackwise_dsl.use.compare import Axis, draw
    from stackwise_dsl.use.compare import compare as compare_runs
    from stackwise_dsl.use.errors import UseError

    if windows is not None and data is None:
        typer.echo("error: --windows needs --data", err=True)
        raise typer.Exit(USAGE)
    if windows is not None and windows < 1:
        typer.echo(f"error: --windows must be at least 1, not {windows}", err=True)
        raise typer.Exit(USAGE)
    if out is not None and out.suffix.lower() != ".png":
        typer.echo(f"error: the plot is a PNG: name it with .png, not {out.name!r}", err=True)
        raise typer.Exit(USAGE)
    folder = out.parent if out is not None else None
    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
        typer.echo(f"error: cannot write the plot into {folder}: not a folder this user can "
                   "write to", err=True)  # fmt: skip
        raise typer.Exit(USAGE)
    if device not in ("cpu", "cuda"):
        typer.echo(f"error: --device is cpu or cuda, not {device!r}", err=True)
        raise typer.Exit(USAGE)
    try:
        result = compare_runs(run_dirs, Axis(x.value), data=data, windows=windows,
                              device=device)  # fmt: skip
        if out is not None:
            draw(result, out)
    except UseError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(USAGE) from None
    except runtime.RunError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(PROBLEMS) from None
    if format is Format.json:
        _Output().json(result.to_json())
        raise typer.Exit(OK)
    from stackwise_dsl.cli.eval_view import compare_table

    for line in compare_table(result):
        typer.echo(line)
    if out is not None:
        typer.echo(f"plot written to {out}")
    raise typer.Exit(OK)


@app.command()
def explain(code: str = typer.Argument(..., help="A diagnostic code, e.g. SW201.")) -> None:
    """Explain a diagnostic code, with an example and its fix."""
    from stackwise_dsl.cli.explain import explain_text
    from stackwise_dsl.codes import CODES, lookup
    from stackwise_dsl.elaborate.suggest import did_you_mean

    found = lookup(code)
    if found is None:
        hint = (
            did_you_mean(code.upper(), CODES)
            or f"codes run {min(CODES)}-{max(CODES)}; see docs/diagnostics.md"
        )
        typer.echo(f"error: no diagnostic code {code!r} ({hint})", err=True)
        raise typer.Exit(USAGE)
    typer.echo(explain_text(found))


@app.command()
def lsp() -> None:
    """Serve the language server over stdin and stdout (for editors)."""
    try:
        from stackwise_dsl.lsp.server import serve
    except ImportError as e:  # pygls is a dependency; an install without it says so
        typer.echo(f"error: the language server needs pygls ({e}); pip install pygls", err=True)
        raise typer.Exit(USAGE) from None
    serve()


def _exact_text(file: Path) -> str:
    """A spec's text as its bytes have it (line ends kept), so its SHA-256 in a compiled
    script is the file's and the run directory's spec.sw is a copy of it."""
    with open(file, encoding="utf-8", newline="") as f:
        return f.read()


# --- rendering ---------------------------------------------------------------------------------


class _Output:
    """Styled lines through rich on a terminal, plain text otherwise (rich stays unloaded)."""

    def __init__(self) -> None:
        self.console = None
        if sys.stdout.isatty():
            from rich.console import Console

            self.console = Console(highlight=False, soft_wrap=True)

    def line(self, segments) -> None:
        if self.console is None:
            sys.stdout.write("".join(text for text, _ in segments).rstrip() + "\n")
            return
        from rich.text import Text

        text = Text()
        for chunk, style in segments:
            text.append(chunk, style=style or None)
        self.console.print(text)

    def raw(self, text: str) -> None:
        sys.stdout.write(text)

    def json(self, obj) -> None:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _print_diagnostics(out: _Output, diagnostics, sources) -> None:
    from stackwise_dsl import diagnostics as diag

    for d in diagnostics:
        for line in diag.render(d, sources):
            out.line(line)
        out.line(())


def _summary_segment(result: dict) -> tuple[str, str]:
    """`2 errors, 1 warning` in red, or `ok` / `ok (1 warning)` in green."""
    parts = [_count(result["errors"], "error"), _count(result["warnings"], "warning")]
    text = ", ".join(p for p in parts if p)
    if result["errors"]:
        return (text, "red")
    return ("ok" if not text else f"ok ({text})", "green")


def _count(n: int, word: str) -> str:
    return "" if n == 0 else f"{n} {word}" + ("s" if n != 1 else "")


def _require_valid_overrides(overrides: list[str]) -> None:
    """A malformed `--set` is a usage error (exit 2), reported before anything runs."""
    from stackwise_dsl import diagnostics as diag
    from stackwise_dsl.elaborate import override_source, parse_override

    bad = [o for o in overrides if isinstance(parse_override(o), diag.Diagnostic)]
    if bad:
        out = _Output()
        for o in bad:
            d = parse_override(o)
            _print_diagnostics(out, (d,), {d.span.source: override_source(o)})
        raise typer.Exit(USAGE)
