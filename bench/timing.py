"""Timed loops, alternated round by round (A B C D, B C D A, ...), summarised by medians."""

import gc
import statistics
import time


def loop(op, duration):
    """Run `op()` repeatedly for about `duration` seconds: (count, wall seconds, CPU seconds of this process)."""
    op()  # warm-up, untimed: first calls pay imports and allocator growth
    count = 0
    cpu0, started = time.process_time(), time.perf_counter()
    deadline = started + duration
    while True:
        op()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    return count, now - started, time.process_time() - cpu0


def timed(op):
    """Turn a zero-argument operation into a path: duration -> (count, wall, cpu)."""
    return lambda duration: loop(op, duration)


def alternate(paths, rounds, duration, progress=None):
    """Run every path once per round, rotating the order; {name: [(count, wall, cpu), ...]}."""
    names = list(paths)
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            gc.collect()
            samples[name].append(paths[name](duration))
        if progress:
            progress(f"round {r + 1}/{rounds} of {', '.join(names)}")
    return samples


def summarize(samples):
    """Median rate (ops/s), median client CPU per op (µs), spread (min..max rate), ops counted."""
    rates = [count / wall for count, wall, _ in samples if wall > 0]
    cpus = [cpu / count * 1e6 for count, _, cpu in samples if count]
    return {"rate": statistics.median(rates), "rate_min": min(rates), "rate_max": max(rates),
            "cpu_us": statistics.median(cpus) if cpus else None,
            "ops": sum(count for count, _, _ in samples), "rounds": len(samples)}


def median_ms(values):
    """Median of seconds, in milliseconds."""
    return statistics.median(values) * 1000 if values else None
