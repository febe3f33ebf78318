"""The command line: run, validate, plan, steps, schema.

Exit codes: 0 every item built; 1 some items failed; 2 the recipe or the command
line is invalid (nothing was built).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medflow import startup

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_INVALID = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; without it, this process's own, which ends when this returns.

    Start-up runs without the cyclic garbage collector (see :mod:`medflow.startup`); a caller
    passing ``argv`` gets the collector back as it was. This process's own command line also
    starts numpy's BLAS without helper threads (:func:`medflow.startup.one_blas_thread`) and keeps
    freed memory for the next item (:func:`medflow.startup.steady_heap`).
    """
    if argv is None:
        startup.one_blas_thread()  # before anything imports numpy
        startup.steady_heap()
    restore_gc = startup.quiet()
    try:
        return _main(argv)
    finally:
        restore_gc(argv is None)


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser(_command_named(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    restore = _stop_on_signals() if args.command == "run" else None
    try:
        code, lines = _handle(args)
        for line in lines:
            print(line, file=sys.stderr)
        if lines and getattr(args, "log", None):
            _append_log(Path(args.log), lines)
        _flush_stdout()
        return code
    except BrokenPipeError:  # the reader of our output left (medflow plan ... | head): end quietly
        _silence_stdout()
        return EXIT_OK
    finally:
        if restore is not None:
            restore()


def _handle(args: argparse.Namespace) -> tuple[int, list[str]]:
    """Run the command: (exit code, error lines for stderr); an error is one line (two for a recipe)."""
    from medflow.errors import FileSystemError, InputError, MedflowError, RecipeError, UsageError

    try:
        return args.handler(args), []
    except RecipeError as exc:
        return EXIT_INVALID, [str(exc), f"recipe invalid: {len(exc.issues)} error(s); nothing was built"]
    except (UsageError, InputError) as exc:
        return EXIT_INVALID, [f"medflow: error: {exc}"]
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM during a run (see _stop_on_signals)
        signum = getattr(exc, "signum", signal.SIGINT)
        start = "\n" if sys.stderr.isatty() else ""  # end a progress line first
        return 128 + signum, [f"{start}medflow: interrupted by {signal.Signals(signum).name}: finished items are "
                              "kept; run again to resume"]
    except (FileSystemError, MedflowError) as exc:
        return EXIT_FAILED_ITEMS, [f"medflow: error: {exc}"]
    except BrokenPipeError:
        raise
    except OSError as exc:  # an OS error no medflow code expected: still one line, naming the file
        from medflow.errors import describe_os_error

        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_FAILED_ITEMS, [f"medflow: error: {where}{describe_os_error(exc)}"]


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """After a closed pipe: later writes (and the flush at exit) go nowhere instead of raising."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests capture it): nothing to silence
        pass


def _stop_on_signals():
    """SIGINT and SIGTERM raise :class:`~medflow.errors.Interrupted` in the main thread (exit 130/143).

    The exception unwinds the build like Ctrl-C: workers are stopped, this run's temp files
    removed, the locks released. Further signals are ignored while that cleanup runs.
    Returns a function restoring the previous handlers.
    """
    from medflow.errors import Interrupted

    def stop(signum, _frame):
        for name in (signal.SIGINT, signal.SIGTERM):
            signal.signal(name, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {name: signal.signal(name, stop) for name in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for name, handler in previous.items():
            signal.signal(name, handler)

    return restore


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only`` (a command), only that command's arguments are built.

    Every command is still listed (``medflow --help``, the error naming the choices): a command line
    parses the same either way, the other commands' arguments are just not set up for nothing.
    """
    parser = argparse.ArgumentParser(
        prog="medflow", description="Build reproducible training datasets from DICOM with a declarative recipe."
    )
    parser.add_argument("--version", action="version", version=f"medflow {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if only is None or only == name:
            arguments(command)
    return parser


def _command_named(argv: Sequence[str] | None) -> str | None:
    """The command a command line names (its first word), or None (none, an option, or an unknown one)."""
    words = sys.argv[1:] if argv is None else list(argv)
    return words[0] if words and words[0] in _COMMANDS else None


def _run_args(run: argparse.ArgumentParser) -> None:
    _recipe_args(run)
    run.add_argument("--workers", help="worker processes (an integer or 'auto'); overrides engine.workers")
    going = run.add_mutually_exclusive_group()
    going.add_argument("--keep-going", dest="keep_going", action="store_true", default=None,
                       help="build every item even when some fail (default)")
    going.add_argument("--fail-fast", dest="keep_going", action="store_false",
                       help="stop dispatching items after the first failure")
    run.add_argument("--verify", action="store_true", help="rehash inputs and outputs instead of trusting size+mtime")
    run.add_argument("--backend", choices=["local", "dask"], help="overrides engine.backend")
    run.add_argument("--dask-address", metavar="ADDRESS", help="Dask scheduler, e.g. tcp://host:8786 (engine.address)")
    run.add_argument("--dry-run", action="store_true", help="show the plan; compute and write nothing")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("--log", metavar="FILE",
                     help="also write the build's log to FILE (it is always written as build.log in the output)")
    run.add_argument("--force", action="store_true",
                     help="write into an existing folder that is not a medflow output (nothing in it is deleted)")
    run.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                     help="when another build is writing the same output folder: wait for it (default), "
                          "or refuse at once (--no-wait)")
    run.set_defaults(handler=_cmd_run)


def _validate_args(validate: argparse.ArgumentParser) -> None:
    validate.add_argument("recipes", nargs="+", metavar="RECIPE")
    validate.set_defaults(handler=_cmd_validate)


def _plan_args(plan: argparse.ArgumentParser) -> None:
    _recipe_args(plan)
    plan.add_argument("--verify", action="store_true", help="rehash inputs and outputs")
    plan.add_argument("--workers", help="worker processes that read the headers of many new files "
                                        "(an integer or 'auto'; default 1)")
    plan.set_defaults(handler=_cmd_plan)


def _preview_args(preview: argparse.ArgumentParser) -> None:
    _recipe_args(preview)
    preview.add_argument("--items", type=int, default=2, metavar="N", help="number of items to show (default 2)")
    preview.add_argument("--out", metavar="PNG",
                         help="montage file (default: <outputs.dir>.preview.png, beside the output folder)")
    preview.set_defaults(handler=_cmd_preview)


def _steps_args(steps: argparse.ArgumentParser) -> None:
    steps.add_argument("name", nargs="?")
    steps.set_defaults(handler=_cmd_steps)


def _doctor_args(doctor: argparse.ArgumentParser) -> None:
    doctor.add_argument("recipe", metavar="RECIPE", nargs="?", help="also show where this recipe's build would go")
    doctor.add_argument("--source", metavar="PATH", help="read PATH instead of the recipe's source (as for run)")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="override a recipe value (as for run)")
    doctor.set_defaults(handler=_cmd_doctor)


def _schema_args(schema: argparse.ArgumentParser) -> None:
    schema.add_argument("--write", metavar="PATH", help="write it to PATH instead of printing")
    schema.set_defaults(handler=_cmd_schema)


def _audit_args(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("output", metavar="OUTPUT", help="the build folder (holds manifest.json)")
    audit.add_argument("--source", metavar="SOURCE",
                       help="the original files: also search for their identifying values (names, IDs, dates...)")
    audit.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.set_defaults(handler=_cmd_audit)


def _diff_args(diff: argparse.ArgumentParser) -> None:
    diff.add_argument("build_a", metavar="BUILD_A", help="a build folder (holds manifest.json)")
    diff.add_argument("build_b", metavar="BUILD_B", help="the build to compare it with")
    diff.add_argument("--json", action="store_true", help="print the report as JSON")
    diff.set_defaults(handler=_cmd_diff)


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE")
    parser.add_argument("--source", metavar="PATH",
                        help="build from this DICOM folder instead of the recipe's source (its filter is kept)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="override a recipe value, e.g. --set steps[0].width=350 (repeatable)")


def _version() -> str:
    from medflow import __version__

    return __version__


def _load(args: argparse.Namespace):
    from medflow.recipe.loader import load_recipe

    loaded = load_recipe(args.recipe, overrides=args.overrides, source=getattr(args, "source", None))
    startup.started()  # what comes next grows with the dataset: collect it
    return loaded


def _cmd_run(args: argparse.Namespace) -> int:
    from medflow.errors import UsageError

    early_git = None
    if not args.dry_run:
        from medflow.engine.provenance import GitStateSoon

        early_git = GitStateSoon.of_recipe(args.recipe)  # git runs while the recipe loads
    loaded = _load(args)
    workers = _workers_arg(args.workers)
    if args.dry_run:
        return _print_plan(loaded, verify=args.verify, workers=workers, backend=args.backend)
    from medflow.engine.build import build

    if (args.backend or loaded.recipe.engine.backend) == "dask" and not (args.dask_address or loaded.recipe.engine.address):
        raise UsageError("the dask backend needs a scheduler address: engine.address or --dask-address")
    from medflow.engine.progress import Progress

    startup.started()  # the engine's imports (pydicom) are start-up too
    lines: list[str] = []

    def write_logs(report) -> None:  # while the build holds its output folder (see build's finish)
        lines.extend(_summary_lines(report))
        _write_logs(args, loaded, report, lines)  # first: a reader that leaves the pipe early loses nothing

    report = build(loaded, workers=workers, keep_going=args.keep_going, verify=args.verify,
                   progress=Progress(enabled=not args.quiet), backend=args.backend, address=args.dask_address,
                   force=args.force, wait=args.wait, git_state=early_git, finish=write_logs)
    _echo(lines)
    return report.exit_code


def _summary_lines(report) -> list[str]:
    """What the console shows after a build (also the head of its log)."""
    lines: list[str] = []
    unreadable = f", {len(report.unreadable)} unreadable file(s)" if report.unreadable else ""
    unreadable += f", {len(report.quarantined)} quarantined" if report.quarantined else ""
    lines.append(
        f"{report.ok}/{report.total} items ok, {len(report.failed)} failed{unreadable}, "
        f"{report.computed} computed, {report.from_cache} from cache, in {report.seconds:.1f} s"
    )
    lines.append(f"output: {report.out_dir}  (manifest: {report.out_dir / 'manifest.json'})")
    accounting = report.accounting
    if accounting:
        withheld = len(accounting["withheld"])
        # a chain that writes DICOM writes each input file back; any other builds them into its outputs
        kinds = {w.get("kind") for w in ((report.manifest or {}).get("recipe", {}).get("resolved", {})
                                         .get("outputs", {}).get("writers") or []) if isinstance(w, dict)}
        used = "written" if "dicom" in kinds else "built into the outputs"
        lines.append(f"inputs: {accounting['inputs']} DICOM file(s) = {accounting['written']} {used} + {withheld} withheld"
                     + (" (each with its reason in the manifest's accounting)" if withheld else ""))
    filtered, skipped = split_skipped(report.skipped)
    n_filtered = len(filtered) + len(report.filtered)
    if n_filtered or skipped or report.unreadable:
        lines.append(f"not built: {n_filtered} filtered (left out by the recipe's filter), {len(skipped)} skipped "
                     f"(not DICOM, hidden, or no pixel data), {len(report.unreadable)} unreadable; "
                     f"each file with its reason in {LOG_NAME}")
    for who, reason in report.failed:
        lines.append(f"FAILED {who}: {reason}")
    for file, reason in report.unreadable:
        lines.append(f"UNREADABLE {file}: {reason}")
    for who, reason in report.quarantined:
        lines.append(f"QUARANTINED {who}: {reason}")
    for warning in report.warnings:
        lines.append(f"WARNING: {warning}")
    for path in report.private_files:
        lines.append(f"private file (mode 0600, keep it out of the dataset): {path}")
    return lines


#: The build's log, written beside its manifest.
LOG_NAME = "build.log"


def split_skipped(skipped: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Files discovery left out: (filtered by the recipe's ``filter``, skipped for what they are).

    Filtered: a localizer, or a modality / series description the filter does not select.
    Skipped: not DICOM, hidden, a media directory, no pixel data, truncated, a duplicate.
    """
    def by_filter(reason: str) -> bool:
        return reason == "localizer" or reason.endswith("not selected by the filter")

    return [e for e in skipped if by_filter(e[1])], [e for e in skipped if not by_filter(e[1])]


def _echo(lines: list[str]) -> None:
    """Print to stdout; a reader that left the pipe (``| head``) ends the printing quietly."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _log_lines(loaded, report, summary: list[str]) -> list[str]:
    """The build log: the console's summary, then every item, note and file left out, with reasons.

    Everything comes from the report and its manifest, which a de-identifying build has already
    redacted (keyed item ids, ``<file:...>`` tokens): the log holds nothing the console would not.
    """
    import datetime as dt

    manifest = report.manifest or {}
    run = manifest.get("run", {})
    lines = [f"medflow {_version()} run of {loaded.path.name} ({loaded.recipe.name}), "
             f"started {run.get('started', '?')}, finished {run.get('finished', dt.datetime.now(dt.UTC).isoformat())}",
             *summary, "", "items:"]
    computed, cached = run.get("computed", {}), set(run.get("from_cache", []))
    for entry in manifest.get("items", []):
        how = "from cache" if entry["id"] in cached else "computed: " + " > ".join(computed.get(entry["id"], []))
        error = f": {entry['error']}" if entry.get("error") else ""
        lines.append(f"  {entry['id']}: {entry['status']}{error} ({how})")
        lines += [f"      note: {note}" for note in _notes(entry.get("meta", {}))]
    filtered, skipped = split_skipped(report.skipped)
    for title, rows in (("filtered files (the recipe's filter)", filtered + list(report.filtered)),
                        ("skipped files (not DICOM, hidden, or no pixel data)", skipped),
                        ("unreadable files", report.unreadable)):
        if rows:
            lines += ["", f"{title}: {len(rows)}", *(f"  {file}: {reason}" for file, reason in rows)]
    withheld = (manifest.get("accounting") or {}).get("withheld", [])
    if withheld:
        lines += ["", f"withheld inputs: {len(withheld)}", *(f"  {w['file']}: {w['reason']}" for w in withheld)]
    if manifest.get("notes"):
        lines += ["", "dataset notes:", *(f"  {note}" for note in manifest["notes"])]
    return lines


def _notes(meta) -> list[str]:
    """Every note an item's steps and reader recorded (any ``notes`` list in its meta), once each."""
    found: list[str] = []

    def walk(value) -> None:  # a dict or a list; scalars (most of a record: geometry) are not visited
        for key, sub in value.items() if isinstance(value, dict) else enumerate(value):
            if key == "notes" and isinstance(sub, list):
                found.extend(str(n) for n in sub if str(n) not in found)
            elif isinstance(sub, dict | list):
                walk(sub)

    if isinstance(meta, dict | list):
        walk(meta)
    return found


def _write_logs(args: argparse.Namespace, loaded, report, summary: list[str]) -> None:
    """``build.log`` beside the manifest, and ``--log FILE`` when given (atomic writes)."""
    from medflow.writers.atomic import atomic_write_bytes

    text = ("\n".join(_log_lines(loaded, report, summary)) + "\n").encode("utf-8")
    atomic_write_bytes(report.out_dir / LOG_NAME, text)
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.log), text)


def _append_log(path: Path, lines: list[str]) -> None:
    """A run that ended in an error line still leaves it in its ``--log``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write("".join(line.lstrip("\n") + "\n" for line in lines))
    except OSError:
        pass


def _cmd_validate(args: argparse.Namespace) -> int:
    from medflow.recipe.loader import validate_recipe_files

    issues = validate_recipe_files(args.recipes)
    for issue in issues:
        print(issue.format(), file=sys.stderr)
    if issues:
        print(f"{len(issues)} error(s)", file=sys.stderr)
        return EXIT_INVALID
    print(f"{len(args.recipes)} recipe(s) valid")
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    return _print_plan(_load(args), verify=args.verify, workers=_workers_arg(args.workers))


def _workers_arg(workers: str | None) -> int | str | None:
    """``--workers`` as given: None, ``"auto"`` or an int >= 1.

    Raises:
        UsageError: anything else.
    """
    from medflow.errors import UsageError

    if workers is None or workers == "auto":
        return workers
    try:
        count = int(workers)
    except ValueError:
        raise UsageError(f"--workers must be an integer >= 1 or 'auto' (got {workers!r})") from None
    if count < 1:
        raise UsageError(f"--workers must be an integer >= 1 or 'auto' (got {count})")
    return count


def _print_plan(loaded, *, verify: bool, workers: int | str | None, backend: str | None = None) -> int:
    from medflow.engine.build import prepare
    from medflow.engine.execute import resolve_workers

    startup.started()  # the engine's imports (pydicom) are start-up too
    # only an explicit --workers: waking workers (~0.7 s) that no build then reuses pays off from
    # several thousand new files on
    local = (backend or loaded.recipe.engine.backend) == "local"
    n_workers = resolve_workers(workers) if local and workers is not None else 1
    prepared = prepare(loaded, verify=verify, record=False, workers=n_workers)
    hide = _path_hider(prepared)
    up_to_date = [p for p in prepared.plans if p.up_to_date]
    todo = [p for p in prepared.plans if not p.up_to_date]
    print(f"{len(prepared.plans)} items: {len(up_to_date)} up to date, {len(todo)} to build")
    for index, params in enumerate(loaded.recipe.steps):
        if getattr(params, "needs_dataset_stats", lambda: False)():
            state = "cached" if index in prepared.dataset_stats else "computed in a first pass over every item"
            print(f"  dataset statistics for step {index + 1} '{params.step}': {state}")
    for plan in todo:
        names = [link.name for link in plan.links]
        cached = names[: plan.start]
        computed = names[plan.start :]
        from_cache = f"from cache: {' > '.join(cached)}; " if cached else ""
        what = f"compute: {' > '.join(computed)}" if computed else "write outputs only"
        print(f"  {plan.item.item_id}: {hide('; '.join(plan.reasons), plan.item)}")
        print(f"      {from_cache}{what}")
    for plan in up_to_date:
        print(f"  {plan.item.item_id}: up to date")
    for file, reason in prepared.unreadable:
        print(f"  unreadable input {hide(file + ': ' + reason, None, [file])}")
    filtered, skipped = split_skipped(prepared.skipped)
    if filtered or skipped or prepared.unreadable:
        print(f"not built: {len(filtered)} filtered (left out by the recipe's filter), {len(skipped)} skipped "
              f"(not DICOM, hidden, or no pixel data), {len(prepared.unreadable)} unreadable")
    _print_step_dry_runs(loaded, prepared)
    return EXIT_OK


def _path_hider(prepared):
    """``hide(text, item=None, paths=())``: the item's (and ``paths``') input paths as manifest tokens,
    when the recipe de-identifies (exports name folders after patients); the text as is otherwise."""
    if not prepared.deidentifies:
        return lambda text, item=None, paths=(): text
    from medflow.engine.privacy import PathRedactor

    redactor = PathRedactor(prepared.source_root)
    return lambda text, item=None, paths=(): redactor.text(text, [*paths, *(item.files if item else ())])


def _print_step_dry_runs(loaded, prepared) -> None:
    """Steps whose function has a ``dry_run(params, first_file) -> lines`` hook show what they would do."""
    from medflow.steps.registry import get_step

    if not prepared.items:
        return
    first = prepared.items[0]
    for index, params in enumerate(loaded.recipe.steps):
        hook = getattr(get_step(params.step).function, "dry_run", None)
        if hook is None:
            continue
        print(f"steps[{index}] {params.step}: on the first file of item {first.item_id} "
              f"(same rules for the {len(prepared.items)} item(s)):")
        for line in hook(params, Path(first.root) / first.files[0]):
            print(f"    {line}")


def _cmd_preview(args: argparse.Namespace) -> int:
    from medflow.errors import UsageError
    from medflow.preview import preview

    if args.items < 1:
        raise UsageError(f"--items must be >= 1 (got {args.items})")
    result = preview(_load(args), n_items=args.items, out=args.out)  # default: beside the output folder
    height, width = result.montage.shape[:2]
    print(f"preview: {result.path} ({len(result.rows)} item(s), {width}x{height} px)")
    for who, reason in result.errors:
        print(f"FAILED {who}: {reason}")
    return EXIT_FAILED_ITEMS if result.errors else EXIT_OK


def _cmd_steps(args: argparse.Namespace) -> int:
    from medflow.steps.registry import all_steps, get_step

    if args.name:
        try:
            spec = get_step(args.name)
        except KeyError:
            import difflib

            names = [s.name for s in all_steps()]
            close = difflib.get_close_matches(args.name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known steps: {', '.join(names)}"
            print(f"medflow: error: unknown step '{args.name}'{hint}", file=sys.stderr)
            return EXIT_INVALID
        print(_describe_step(spec, full=True))
        return EXIT_OK
    for spec in all_steps():
        print(_describe_step(spec, full=False))
        print()
    return EXIT_OK


def _describe_step(spec, *, full: bool) -> str:
    flags = []
    if spec.pointwise:
        flags.append("pointwise")
    if spec.checkpoint:
        flags.append("checkpointed")
    head = f"{spec.name} (version {spec.version}{', ' + ', '.join(flags) if flags else ''}): {spec.summary}"
    lines = [head]
    if full:
        doc = (spec.function.__doc__ or "").strip().splitlines()[1:]
        body = "\n".join(doc).strip()
        if body:
            lines.append("")
            lines.extend("  " + line.strip() for line in body.splitlines())
            lines.append("")
        lines.append("  parameters:")
    schema = spec.params_model.model_json_schema()
    required = set(schema.get("required", []))
    for name, field in spec.params_model.model_fields.items():
        if name == "step":
            continue
        prop = schema["properties"].get(name, {})
        type_text = _type_text(prop)
        unit = prop.get("unit")
        if name in required:
            default = "required"
        else:
            value = prop.get("default", field.get_default(call_default_factory=True))
            default = f"default {json.dumps(value, default=str)}"
        unit_text = f" [{unit}]" if unit and unit != "none" else ""
        line = f"    {name}: {type_text}{unit_text}, {default}"
        if full and field.description:
            line += f"\n        {field.description}"
        lines.append(line)
    return "\n".join(lines)


def _type_text(prop: dict) -> str:
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    if "anyOf" in prop:
        return " | ".join(_type_text(p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_type_text(p) for p in prop["prefixItems"]) + "]"
        return f"list[{_type_text(prop.get('items', {}))}]"
    return str(prop.get("type", "object"))


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 0 (2: the recipe is invalid); prints only, writes nothing."""
    from medflow.doctor import doctor_lines

    loaded = _load(args) if args.recipe else None
    _echo(doctor_lines(loaded))
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from medflow.recipe.model import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.write:
        from medflow.writers.atomic import atomic_write_bytes

        atomic_write_bytes(Path(args.write), text.encode())
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0: no finding; 1: findings (one line each, never the value); 2: OUTPUT is not a build."""
    startup.started()  # reads a whole build
    from medflow.audit import EXIT_NOT_A_BUILD, NotABuildError, audit_build, format_report
    from medflow.errors import UsageError

    source = Path(args.source) if args.source else None
    if source is not None and not source.exists():
        raise UsageError(f"--source {source}: no such file or folder")
    try:
        report = audit_build(Path(args.output), source=source)
    except NotABuildError as exc:
        print(f"medflow: error: {exc}", file=sys.stderr)
        return EXIT_NOT_A_BUILD
    if args.json:
        print(json.dumps(report.as_dict(), indent=1, ensure_ascii=False))
    else:
        print(format_report(report))
    return report.exit_code


def _cmd_diff(args: argparse.Namespace) -> int:
    """Exit 0: same recipe values, items, splits and outputs; 1: they differ; 2: not a build."""
    startup.started()  # reads two manifests of any size
    from medflow.diff import diff_builds, format_report, is_identical

    report = diff_builds(args.build_a, args.build_b)
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else format_report(report))
    return 0 if is_identical(report) else 1


#: Every command, in the order ``medflow --help`` lists them: its help line, and what adds its arguments.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("build the dataset of a recipe", _run_args),
    "validate": ("check recipes; report every error as FILE:LINE:COL", _validate_args),
    "plan": ("show what a run would take from the cache and what it would recompute", _plan_args),
    "preview": ("run the steps on a few items and draw one PNG montage (no build)", _preview_args),
    "steps": ("list the registered steps, or show one in full", _steps_args),
    "doctor": ("versions, optional extras, DICOM decoders, and where a recipe writes", _doctor_args),
    "schema": ("print the recipe's JSON Schema", _schema_args),
    "audit": ("prove a de-identified build: scan it for residual identifying values", _audit_args),
    "diff": ("compare two builds: items added, removed, changed and why (manifests only)", _diff_args),
}

if __name__ == "__main__":
    sys.exit(main())
