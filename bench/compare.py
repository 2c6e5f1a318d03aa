"""gradtensor side by side with PyTorch eager and hand-written NumPy/CuPy, in one process.

    python -m bench.compare --device cpu [--quick]     # measure, save bench/results/cpu.json, print the table
    python -m bench.compare --device cuda --write-readme  # ... and render it into README's cuda section
    python -m bench.compare --render-readme              # README from the saved JSON, without measuring
    python -m bench.compare --summary --device cuda      # a short table of the saved JSON

Every workload (bench.workloads) is built for each implementation from the same parameters and data,
then timed with the implementations interleaved (bench.measure). The PyTorch column is left out when
torch does not import. --quick (the CI smoke run) uses smaller sizes and short repeats and saves
<device>-quick.json.
"""
import argparse
import datetime
import json
import pathlib
import sys
import traceback

import gradtensor as gt
from bench import measure, render
from bench.workloads import IMPLEMENTATIONS, Unsupported, cases

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
README = ROOT / "README.md"

# (repeats, seconds per repeat) per mode
SETTINGS = {"tiny": (1, 0.0), "quick": (3, 0.04), "full": (5, 0.25)}


def _error_text(error):
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]


def _build(case, device):
    """{implementation: Runner} of those that build and run one step, and {implementation: result} of the rest."""
    runners, failed = {}, {}
    for implementation in IMPLEMENTATIONS:
        try:
            runner = case.builders[implementation](device)
            runner.step()
        except Unsupported as reason:
            failed[implementation] = {"skipped": str(reason)}
        except Exception as error:  # noqa: BLE001 - one failing implementation must not stop the run
            traceback.print_exc()
            failed[implementation] = {"error": _error_text(error)}
        else:
            runners[implementation] = runner
    return runners, failed


def measure_case(case, device, repeats, target_seconds, synchronize):
    runners, results = _build(case, device)
    if runners:
        try:
            timings = measure.time_interleaved(runners, synchronize, repeats, target_seconds,
                                               warmup=3 if device == "cuda" else 1)  # + the build's trial step
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            timings = {}
            results.update({name: {"error": _error_text(error)} for name in runners})
        for name, (seconds, samples, steps) in timings.items():
            results[name] = {"seconds": seconds, "samples": samples, "steps_per_repeat": steps}
            if case.measure_memory:
                try:
                    results[name]["peak_memory_bytes"] = measure.peak_step_memory(runners[name], name, device,
                                                                                  synchronize)
                except Exception as error:  # noqa: BLE001
                    results[name]["peak_memory_error"] = _error_text(error)
    del runners
    measure.free_device_memory(device)
    return {"key": case.key, "label": case.label, "flops": case.flops, "dtype": case.dtype,
            "measure_memory": case.measure_memory, "notes": case.notes,
            "results": {name: results[name] for name in IMPLEMENTATIONS if name in results}}


def run(device, mode, only=None, repeats=None, target_seconds=None, threads=None, progress=print,
        save=lambda results: None):
    """Measure every case of (device, mode) (those whose key is in `only`, when given); the results dict.
    save(results) is called after each stage, so a run stopped part-way leaves what it measured."""
    default_repeats, default_target = SETTINGS[mode]
    repeats = default_repeats if repeats is None else repeats
    target_seconds = default_target if target_seconds is None else target_seconds
    threads, threads_source = measure.set_threads(threads)
    synchronize = measure.synchronizer(device)
    results = {
        "device": device, "mode": mode, "repeats": repeats, "seconds_per_repeat": target_seconds,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": measure.machine_info(device), "versions": measure.versions(),
        "threads": threads, "threads_source": threads_source, "roofline": None, "rows": [], "kernels": [],
    }
    if device == "cuda":
        results["roofline"] = measure.gpu_roofline(quick=mode != "full")
        if only is None:
            from bench.gpu_kernels import kernel_bandwidths

            results["kernels"] = kernel_bandwidths(results["roofline"]["copy_bytes_per_second"],
                                                   quick=mode != "full")
        save(results)
    selected = [case for case in cases(device, mode) if only is None or case.key in only]
    for case in selected:
        row = measure_case(case, device, repeats, target_seconds, synchronize)
        results["rows"].append(row)
        save(results)
        progress(f"{case.label}: " + ", ".join(
            f"{name} {render.format_seconds(result.get('seconds'))}" if "seconds" in result
            else f"{name} {'error' if 'error' in result else 'skipped'}" for name, result in row["results"].items()))
    return results


def results_path(device, mode):
    return RESULTS_DIR / (f"{device}.json" if mode == "full" else f"{device}-{mode}.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), help="measure on this device")
    parser.add_argument("--quick", action="store_true", help="small sizes, short repeats (CI smoke run)")
    parser.add_argument("--mode", choices=tuple(SETTINGS), help=argparse.SUPPRESS)  # "tiny" for the tests
    parser.add_argument("--only", help="comma-separated workload keys (e.g. mlp_small,op_add)")
    parser.add_argument("--repeats", type=int, help="timing repeats per implementation")
    parser.add_argument("--threads", type=int,
                        help="BLAS and PyTorch threads (default: OpenBLAS's own count, OPENBLAS_NUM_THREADS or the cores)")
    parser.add_argument("--json", type=pathlib.Path, help="results file (default bench/results/<device>.json)")
    parser.add_argument("--write-readme", action="store_true", help="render the table into README's device section")
    parser.add_argument("--render-readme", action="store_true",
                        help="render README's sections from saved results, measuring nothing")
    parser.add_argument("--summary", action="store_true", help="print a short table of saved results, measuring nothing")
    parser.add_argument("--readme", type=pathlib.Path, default=README, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.summary:
        path = args.json or results_path(args.device or "cpu", "quick" if args.quick else "full")
        if not path.exists():
            parser.error(f"--summary: no saved results at {path}")
        print(render.short_table(json.loads(path.read_text())))
        return 0

    if args.render_readme:
        devices = [args.device] if args.device else ["cpu", "cuda"]
        paths = [args.json] if args.json else [results_path(device, "full") for device in devices]
        rendered = 0
        for path in paths:
            if path.exists():
                render.write_readme(args.readme, json.loads(path.read_text()))
                print(f"rendered {path} into {args.readme}")
                rendered += 1
        if not rendered:
            parser.error("no saved results to render (run with --device first)")
        return 0
    if args.device is None:
        parser.error("--device is required unless --render-readme is given")
    mode = args.mode or ("quick" if args.quick else "full")
    if args.device == "cuda" and not gt.cuda.is_available():
        parser.error("--device cuda: no CUDA device (CuPy missing or no GPU visible)")
    only = set(args.only.split(",")) if args.only else None
    path = args.json or results_path(args.device, mode)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(results):
        path.write_text(json.dumps(results, indent=1) + "\n")

    results = run(args.device, mode, only=only, repeats=args.repeats, threads=args.threads, save=save)
    save(results)
    print(f"\nsaved {path}\n")
    print(render.markdown(results))
    if args.write_readme:
        render.write_readme(args.readme, results)
        print(f"\nwrote the {args.device} table into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
