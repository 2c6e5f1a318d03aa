"""Markdown tables from a comparison's results (bench/results/<device>.json), and README's
generated sections: the text between `<!-- bench:<device>:start -->` and `<!-- bench:<device>:end -->`."""
import re

from bench.measure import implementation_label
from bench.workloads import GRADTENSOR, HAND, TORCH


def format_seconds(seconds):
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_bytes(count):
    if count is None:
        return "n/a"
    if count < 1 << 20:
        return f"{count / 1024:.0f} KiB"
    if count < 1 << 30:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count / (1 << 30):.2f} GiB"


def format_ratio(mine, peer):
    """gradtensor's time against a peer's, worded so that the direction is plain."""
    if mine is None or peer is None or peer <= 0 or mine <= 0:
        return "-"
    ratio = mine / peer
    return f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / ratio:.2f}x faster"


def _seconds(row, implementation):
    result = row["results"].get(implementation)
    return result.get("seconds") if result else None


def _time_cell(row, implementation):
    result = row["results"].get(implementation)
    if result is None:
        return "-"
    if result.get("error"):
        return "error"
    if result.get("skipped"):
        return "-"
    return format_seconds(result["seconds"])


def _memory_cell(row, implementations):
    if not row.get("measure_memory"):
        return "-"
    cells = []
    for implementation in implementations:
        result = row["results"].get(implementation)
        cells.append(format_bytes(result.get("peak_memory_bytes")) if result and "seconds" in result else "-")
    return " / ".join(cells)


def _roofline_cell(row, results, implementations):
    roofline = results.get("roofline")
    if not roofline or not row.get("flops"):
        return "-"
    rate = roofline["matmul_flops_per_second"][row["dtype"]]
    cells = []
    for implementation in implementations:
        seconds = _seconds(row, implementation)
        cells.append(f"{row['flops'] / seconds / rate:.1%}" if seconds else "-")
    return " / ".join(cells)


def markdown(results):
    """The README table of one device's results, with its notes."""
    device = results["device"]
    implementations = [i for i in (GRADTENSOR, TORCH, HAND) if any(i in r["results"] for r in results["rows"])]
    has_torch = TORCH in implementations
    labels = {i: implementation_label(i, device) for i in implementations}
    hand = labels.get(HAND, "hand-written")
    header = ["workload", "gradtensor"]
    if has_torch:
        header.append("PyTorch eager")
    header += [f"{hand} (hand-written)"]
    if has_torch:
        header.append("gradtensor vs PyTorch")
    header += [f"gradtensor vs {hand}", "peak memory (" + " / ".join(labels[i] for i in implementations) + ")"]
    gpu = results.get("roofline") is not None
    if gpu:
        header.append("of matmul peak (" + " / ".join(labels[i] for i in implementations) + ")")
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    notes = []
    for row in results["rows"]:
        mine = _seconds(row, GRADTENSOR)
        cells = [row["label"], _time_cell(row, GRADTENSOR)]
        if has_torch:
            cells.append(_time_cell(row, TORCH))
        cells.append(_time_cell(row, HAND))
        if has_torch:
            cells.append(format_ratio(mine, _seconds(row, TORCH)))
        cells += [format_ratio(mine, _seconds(row, HAND)), _memory_cell(row, implementations)]
        if gpu:
            cells.append(_roofline_cell(row, results, implementations))
        lines.append("| " + " | ".join(cells) + " |")
        for implementation, result in row["results"].items():
            reason = result.get("error") or result.get("skipped")
            if reason:
                notes.append(f"{row['label']}, {labels.get(implementation, implementation)}: {reason}")
        notes += [f"{row['label']}: {note}" for note in row.get("notes", [])]
    lines += ["", _summary(results, has_torch)]
    if gpu:
        lines += ["", _kernel_table(results)]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def _summary(results, has_torch):
    machine, versions = results["machine"], results["versions"]
    device = results["device"]
    where = machine.get("gpu", "") + (", host " if device == "cuda" else "") + f"{machine['cpu']} ({machine['cores']} cores)"
    parts = [
        f"Measured {results['timestamp']} on {where}, {results['threads']} thread(s) for OpenBLAS and PyTorch "
        f"({results['threads_source']}; OPENBLAS_NUM_THREADS "
        f"{'=' + machine['openblas_num_threads_env'] if machine.get('openblas_num_threads_env') else 'unset'}), "
        f"{results['mode']} mode; Python {machine['python']}, gradtensor {versions['gradtensor']}, "
        f"NumPy {versions['numpy']}"
        + (f", CuPy {versions['cupy']}" if device == "cuda" else "")
        + (f", PyTorch {versions['torch']}" if has_torch else ", PyTorch not installed (no PyTorch column)") + ".",
        f"Times: median over {results['repeats']} interleaved repeats of many steps each (a step is one op, or "
        "one whole training step: forward, backward, optimizer update), after warm-up"
        + (", the GPU synchronized before each clock reading" if device == "cuda" else "")
        + ". \"x slower\" / \"x faster\" compare gradtensor's time with the peer's.",
    ]
    if device == "cpu":
        parts.append("CPU sizes are scaled down from the GPU workloads (the GPU table has the full sizes: "
                     "transformer d=768, 12 heads, seq 1024, batch 8; MLP 1024-4096-4096-4096-10, batch 4096; "
                     "48 x Linear(1024,1024), batch 16384); the mixed-precision rows run on the GPU only.")
        parts.append("Peak memory: bytes allocated during one step above what was held before it (parameters, "
                     "optimizer state, data), traced with tracemalloc (which sees NumPy's arrays); PyTorch's CPU "
                     "allocator is not traced (n/a).")
    else:
        roofline = results["roofline"]
        rates = roofline["matmul_flops_per_second"]
        parts.append("Peak memory: allocator peak during one step above what was held before it (gradtensor and "
                     "CuPy: CuPy's pool, via gt.cuda.max_memory_allocated; PyTorch: torch.cuda.max_memory_allocated). "
                     f"Roofline measured in this run: copy {roofline['copy_bytes_per_second'] / 1e9:.0f} GB/s "
                     f"(read + write), CuPy matmul {roofline['matmul_size']}^3 at "
                     f"{rates['float32'] / 1e12:.1f} TFLOP/s float32 and {rates['float16'] / 1e12:.1f} TFLOP/s "
                     "float16 (bfloat16 rows use the float16 rate); \"of matmul peak\" = model FLOPs per second "
                     "(6 x batch x weights, plus attention) / that rate.")
    return " ".join(parts)


def _kernel_table(results):
    kernels = results.get("kernels") or []
    if not kernels:
        return "No CUDA kernel measurements."
    lines = ["| CUDA kernel (gradtensor.fused) | dtype | time | GB/s | of copy bandwidth |",
             "| --- | --- | ---: | ---: | ---: |"]
    for row in kernels:
        if row.get("error"):
            lines.append(f"| {row['kernel']} | {row['dtype']} | error: {row['error'][:80]} | - | - |")
        else:
            lines.append(f"| {row['kernel']} | {row['dtype']} | {format_seconds(row['seconds'])} | "
                         f"{row['bytes_per_second'] / 1e9:.0f} | {row['fraction_of_copy']:.0%} |")
    return "\n".join(lines)


def short_table(results):
    """A compact plain-text summary: times, ratios and (GPU) the share of the matmul peak per row."""
    lines = [f"{'workload':24} {'gradtensor':>11} {'PyTorch':>11} {'hand':>11} {'vs PyTorch':>13} {'vs hand':>13}"
             + ("  of peak (gt/torch/hand)" if results.get("roofline") else "")]
    for row in results["rows"]:
        mine = _seconds(row, GRADTENSOR)
        line = (f"{row['key'][:24]:24} {_time_cell(row, GRADTENSOR):>11} {_time_cell(row, TORCH):>11} "
                f"{_time_cell(row, HAND):>11} {format_ratio(mine, _seconds(row, TORCH)):>13} "
                f"{format_ratio(mine, _seconds(row, HAND)):>13}")
        if results.get("roofline"):
            line += "  " + _roofline_cell(row, results, (GRADTENSOR, TORCH, HAND))
        lines.append(line)
    for row in results.get("kernels") or []:
        lines.append(f"kernel {row['kernel'][:30]:30} {row['dtype']:8} " + (
            f"error: {row['error'][:60]}" if row.get("error") else f"{row['fraction_of_copy']:.0%} of copy bandwidth"))
    return "\n".join(lines)


def _markers(device):
    return f"<!-- bench:{device}:start -->", f"<!-- bench:{device}:end -->"


def replace_section(text, device, body):
    """text with only what lies between the device's markers replaced by body."""
    start, end = _markers(device)
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"README must contain exactly one pair of markers {start} ... {end}")
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def write_readme(path, results):
    path.write_text(replace_section(path.read_text(), results["device"], markdown(results)))
