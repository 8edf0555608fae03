"""Ratios, goals and the printed table."""

import statistics

HANDSHAKE_ROWS = (
    ("limit", "limit: openssl s_time -new (C client)"),
    ("static", "static: files on disk, one SSLContext"),
    ("naive", "naive: temp files + create_default_context()/call"),
    ("warm", "dyncert warm (cached_client_context hit)"),
    ("cold_memfd", "dyncert cold, memfd tier (new identity)"),
    ("cold_pipe", "dyncert cold, pipe tier (no memfd, e.g. Cloud CLI 3.12)"),
    ("cold_tempfile", "dyncert cold, sealed temp file tier"),
    ("cold_tempfile_tmpfs", "  same, temp dir on tmpfs (/dev/shm)"),
    ("full", "calls.handshake(), reuse off: full handshake"),
    ("resumed", "calls.handshake(), reuse on: dyncert resumed"),
)
HTTPS_ROWS = (
    ("per_request", "calls.https_request, reuse off: 1 connection/request"),
    ("pooled", "calls.https_request, reuse on: keep-alive pool"),
)


def paired_ratio(samples, a, b):
    """Median over rounds of rate(a)/rate(b): adjacent runs share the machine's mood."""
    if a not in samples or b not in samples:
        return None
    ratios = [(ca / wa) / (cb / wb) for (ca, wa, _), (cb, wb, _) in zip(samples[a], samples[b]) if cb and wa and wb]
    return statistics.median(ratios) if ratios else None


def ratios(hs, https, app, tickets=None):
    """Every ratio the goals and the table quote."""
    out = {}
    if tickets:
        # Cost ratios (time per call), so "<= 2x" reads as "at most twice as slow".
        s = tickets["samples"]
        out["no_tickets_vs_tickets_full"] = paired_ratio(s, "tickets_full", "no_tickets_full")
        out["no_tickets_vs_tickets_reuse"] = paired_ratio(s, "tickets_reuse", "no_tickets_reuse")
    if hs:
        s = hs["samples"]
        out.update({
            "warm_vs_static": paired_ratio(s, "warm", "static"),
            "cold_memfd_vs_static": paired_ratio(s, "cold_memfd", "static"),
            "cold_pipe_vs_static": paired_ratio(s, "cold_pipe", "static"),
            "cold_tempfile_vs_static": paired_ratio(s, "cold_tempfile", "static"),
            "cold_tempfile_tmpfs_vs_static": paired_ratio(s, "cold_tempfile_tmpfs", "static"),
            "warm_vs_naive": paired_ratio(s, "warm", "naive"),
            "resumed_vs_full": paired_ratio(s, "resumed", "full"),
            "full_vs_static": paired_ratio(s, "full", "static"),
            "warm_vs_limit_rate": paired_ratio(s, "warm", "limit"),
        })
        warm_cpu, c_cpu = hs["summary"]["warm"]["cpu_us"], hs["summary"]["limit"]["cpu_us"]
        out["python_vs_c_cpu_per_handshake"] = warm_cpu / c_cpu if c_cpu else None
    if https:
        out["pooled_vs_per_request"] = paired_ratio(https["samples"], "pooled", "per_request")
    if app:
        out["app_vs_library_4_clients"] = app["app_4_clients"]["rate"] / app["library_4_threads"]["rate"]
    return out


def goals(r, app, memory):
    """[(goal, measured text, passed or None when not measured)]."""
    def check(name, value, ok, shown):
        return (name, shown if value is not None else "not measured", ok(value) if value is not None else None)

    mem = memory or {}
    private = mem.get("private_ca")
    capath = mem.get("default_capath")
    return [
        check("warm >= 0.97x static", r.get("warm_vs_static"), lambda v: v >= 0.97, f"{(r.get('warm_vs_static') or 0):.3f}x"),
        check("cold >= 0.8x static (memfd)", r.get("cold_memfd_vs_static"), lambda v: v >= 0.8,
              f"{(r.get('cold_memfd_vs_static') or 0):.3f}x"),
        check("cold >= 0.8x static (pipe tier: the fallback without memfd)", r.get("cold_pipe_vs_static"),
              lambda v: v >= 0.8, f"{(r.get('cold_pipe_vs_static') or 0):.3f}x"),
        check("cold >= 0.8x static (temp file tier: last resort, no /proc)", r.get("cold_tempfile_vs_static"),
              lambda v: v >= 0.8, f"{(r.get('cold_tempfile_vs_static') or 0):.3f}x"),
        check("  same, temp dir on tmpfs (App Engine's /tmp is in memory)", r.get("cold_tempfile_tmpfs_vs_static"),
              lambda v: v >= 0.8, f"{r.get('cold_tempfile_tmpfs_vs_static') or 0:.3f}x"),
        check("TLS 1.3 server without tickets costs <= 2x a ticketing one (full handshakes)",
              r.get("no_tickets_vs_tickets_full"), lambda v: v <= 2,
              f"{(r.get('no_tickets_vs_tickets_full') or 0):.2f}x"),
        check("warm >= 10x naive", r.get("warm_vs_naive"), lambda v: v >= 10, f"{(r.get('warm_vs_naive') or 0):.1f}x"),
        check("resumed >= 2x full", r.get("resumed_vs_full"), lambda v: v >= 2, f"{(r.get('resumed_vs_full') or 0):.2f}x"),
        check("pooled >= 10x per-request", r.get("pooled_vs_per_request"), lambda v: v >= 10,
              f"{(r.get('pooled_vs_per_request') or 0):.1f}x"),
        check("app overhead beyond Datastore read + handshake <= 1.5 ms",
              app and app["overhead_ms"], lambda v: v <= 1.5, f"{(app or {}).get('overhead_ms', 0):.2f} ms"),
        check("  same, the WSGI call in-process (no gunicorn/HTTP hop)",
              app and app["app_overhead_in_process_ms"], lambda v: v <= 1.5,
              f"{(app or {}).get('app_overhead_in_process_ms', 0):.2f} ms"),
        check("1,000 private-CA identities <= 40 MB RSS", private and private["rss_kb"],
              lambda v: v <= 40 * 1024, f"{(private or {}).get('rss_kb', 0) / 1024:.1f} MB"),
        check("default-store context <= 1 ms", capath and capath["build_ms"], lambda v: v <= 1.0,
              f"{(capath or {}).get('build_ms', 0):.2f} ms"),
        check("default-store context <= 64 KB", capath and capath["rss_kb"] / capath["count"],
              lambda v: v <= 64, f"{(capath or {}).get('rss_kb', 0) / max((capath or {}).get('count', 1), 1):.1f} KB"),
    ]


def adapter_ratios(adapters):
    """The adapters against the usual workarounds, per client."""
    if not adapters:
        return {}
    s = adapters["samples"]
    return {f"{client}_adapter_vs_{other}": paired_ratio(s, f"{client}_adapter", f"{client}_{other}")
            for client in ("requests", "httpx") for other in ("tempfiles", "static")}


def adapter_goals(r):
    """Adapter goals: >= 10x temp files per call, >= 0.95x static files on disk (skipped when not measured)."""
    out = []
    for client in ("requests", "httpx"):
        for other, floor in (("tempfiles", 10), ("static", 0.95)):
            value = r.get(f"{client}_adapter_vs_{other}")
            if value is not None:
                out.append((f"{client} adapter >= {floor}x {other}", f"{value:.2f}x", value >= floor))
    return out


def signer_ratios(signer):
    """LocalSigner through the binding vs the same key loaded; signatures per new connection with a slow signer."""
    if not signer or "samples" not in signer:
        return {}
    out = {"signer_vs_key_loaded": paired_ratio(signer["samples"], "local_signer", "key_loaded")}
    slow = signer.get("slow_signer")
    if slow:
        out["slow_signer_signatures_per_1000"] = slow["signatures"] * 1000 / slow["requests"]
        out["slow_signer_signatures_per_connection"] = slow["signatures"] / max(slow["connections"], 1)
    return out


def signer_goals(r):
    """Signer goals: the binding costs <= 10% of a full handshake; one signature per new connection."""
    out = []
    value = r.get("signer_vs_key_loaded")
    if value is not None:
        out.append(("LocalSigner full handshakes >= 0.9x key loaded", f"{value:.3f}x", value >= 0.9))
    per = r.get("slow_signer_signatures_per_connection")
    if per is not None:
        out.append(("20 ms signer: one signature per new connection (requests adapter)",
                    f"{r['slow_signer_signatures_per_1000']:.0f} per 1,000 requests, {per:.2f} per connection",
                    per == 1))
    return out


INSTANCE_ROWS = (
    ("library_4_threads", "bare library, 4 threads (calls.handshake)"),
    ("datastore_1_instance", "1 instance, 4 clients, Datastore reads"),
    ("redis_1_instance", "1 instance, 4 clients, Redis global cache"),
    ("datastore_3_instances", "3 instances, 12 clients, Datastore reads"),
    ("redis_3_instances", "3 instances, 12 clients, Redis global cache"),
    ("datastore_1_instance_cold", "1 instance, 4 clients, cold identities, Datastore"),
    ("redis_1_instance_cold", "1 instance, 4 clients, cold identities, Redis cache"),
)


def instance_goals(r, inst):
    """The global cache's goals: no Datastore read for a hot identity, app/library >= 0.35x with 4 clients."""
    if not inst or not inst.get("redis"):
        return []
    reads = inst.get("redis_datastore_reads_per_call")
    ratio = r.get("app_vs_library_4_clients_cache")
    return [("with the cache: Datastore reads per call (hot identity) == 0", f"{reads:.3f}", reads == 0),
            ("with the cache: app/library, 4 clients >= 0.35x", f"{ratio:.2f}x", ratio >= 0.35)]


def instances_lines(inst, r):
    """The `instances` group: rates, reads per call, ratios."""
    lines = [""] + _rows("App instances (gunicorn, 1 worker x 8 threads each) on one Datastore emulator, "
                         "POST .../handshake against s_server", INSTANCE_ROWS, inst["summary"], "library_4_threads")
    reads = [f"Datastore reads (Lookup RPCs) per call, hot identity: {inst['datastore_datastore_reads_per_call']:.3f}"
             " without the cache"]
    if inst.get("redis"):
        reads.append(f"{inst['redis_datastore_reads_per_call']:.3f} with it")
    lines.append("  " + ", ".join(reads))
    if inst.get("redis_keys"):
        lines.append(f"  Redis: {inst['redis_keys']} cached identities, {inst['redis_bytes_per_identity']:.0f} bytes each "
                     "(MEMORY USAGE)")
    lines.append(f"  cold: {inst['cold_identities']} identities called in turn, {inst['contexts_kept']} contexts kept "
                 "per instance (DYNCERT_CACHE_SIZE): a context build and a full handshake per call")
    shown = [f"{k} {v:.2f}x" for k, v in r.items() if isinstance(v, float) and (
        k.startswith("app_vs_library_4_clients_") or k.startswith("cache_vs_") or k.startswith("three_vs_"))]
    lines.append("  " + "; ".join(shown))
    return lines


def _rows(title, rows, summary, base, extra=None):
    lines = [title, f"  {'path':<52} {'rate/s':>8} {'(min..max)':>15} {'CPU µs/op':>10} {'vs ' + base:>10}"]
    for key, label in rows:
        if key not in summary:
            continue
        s = summary[key]
        vs = s["rate"] / summary[base]["rate"] if base in summary else None
        note = (extra or {}).get(key, "")
        cpu = f"{s['cpu_us']:.0f}" if s.get("cpu_us") else "-"
        spread = f"({s['rate_min']:.0f}..{s['rate_max']:.0f})"
        versus = f"{vs:.2f}x" if vs else "-"
        lines.append(f"  {label:<52} {s['rate']:>8.0f} {spread:>15} {cpu:>10} {versus:>10}"
                     + (f"  {note}" if note else ""))
    return lines


def table(result):
    """The human-readable report."""
    meta, lines = result["meta"], []
    lines.append(f"dyncert bench — {meta['python']} / {meta['openssl']} / {meta['cpus']} CPUs / "
                 f"{meta['rounds']} rounds x {meta['duration']} s per path, order rotated, medians")
    hs, https, app, mem = result.get("handshakes"), result.get("https"), result.get("app"), result.get("memory")
    if hs:
        reused = {k: f"session_reused {a}/{n}" for k, (a, n) in hs["reused"].items()}
        lines += [""] + _rows(f"Handshakes against openssl s_server -Verify 1 -verify_return_error ({hs['tls_version']}), "
                              "connect + handshake + close", HANDSHAKE_ROWS, hs["summary"], "static", reused)
    tk = result.get("tickets")
    if tk:
        r, s = result["ratios"], tk["summary"]
        lines += ["", "calls.handshake() against TLS 1.3 s_server with tickets vs -num_tickets 0 (the verdict wait)",
                  f"  reuse off (full handshakes): {s['tickets_full']['rate']:.0f}/s vs "
                  f"{s['no_tickets_full']['rate']:.0f}/s: no-ticket server costs "
                  f"{(r.get('no_tickets_vs_tickets_full') or 0):.2f}x ({tk['verdicts'].get('no_tickets_full')})",
                  f"  reuse on (only the ticketing server resumes): {s['tickets_reuse']['rate']:.0f}/s vs "
                  f"{s['no_tickets_reuse']['rate']:.0f}/s: {(r.get('no_tickets_vs_tickets_reuse') or 0):.2f}x"]
    if result.get("builds"):
        b = result["builds"]["summary"]
        us = {k: 1e6 / v["rate"] for k, v in b.items()}
        memfd = f", memfd tier {us['build_memfd']:.0f}" if "build_memfd" in us else ""
        pipe = f", pipe tier {us['build_pipe']:.0f}" if "build_pipe" in us else ""
        lines += ["", "Cold context builds alone (new SSLContext + trust + identity, no handshake), µs each:",
                  f"  static files {us['build_static']:.0f}{memfd}{pipe}, sealed temp-file tier "
                  f"{us['build_tempfile']:.0f}"
                  + (f" (+{us['build_tempfile'] - us['build_memfd']:.0f} over memfd)" if memfd else "")]
    if https:
        reused = {k: f"session_reused {a}/{n}, {https['connections'][k]} connection(s) opened"
                  for k, (a, n) in https["reused"].items()}
        lines += [""] + _rows(f"HTTPS GET / against nginx ssl_verify_client on ({https['tls_version']})",
                              HTTPS_ROWS, https["summary"], "per_request", reused)
    if app:
        p = app["pieces_ms"]
        lines += ["", f"App end to end: POST .../handshake via gunicorn (1 worker, 8 threads), peer s_server "
                      f"({app['tls_version']})",
                  f"  app, 4 concurrent clients            {app['app_4_clients']['rate']:>8.0f} calls/s",
                  f"  bare library, 4 threads              {app['library_4_threads']['rate']:>8.0f} calls/s"
                  f"   app/library {result['ratios']['app_vs_library_4_clients']:.2f}x",
                  f"  single client, median per call ({app['calls']} calls): {app['e2e_ms']:.2f} ms =",
                  f"    Datastore read {p['datastore_read']:.2f} + unseal {p['unseal']:.3f} + identity "
                  f"{p['identity']:.3f} + context lookup {p['context_lookup']:.3f} + handshake {p['handshake']:.2f}"
                  f" + everything else {app['everything_else_ms']:.2f} ms",
                  f"  overhead beyond Datastore read + handshake: {app['overhead_ms']:.2f} ms via gunicorn; "
                  f"{app['app_overhead_in_process_ms']:.2f} ms for the same WSGI call in-process "
                  f"({app['wsgi_in_process_ms']:.2f} ms)",
                  f"  gunicorn + HTTP floor (GET /healthz, keep-alive): {app['gunicorn_http_floor_ms']:.2f} ms"]
    if mem:
        pc, cp, cb = mem["private_ca"], mem["default_capath"], mem["default_bundle"]
        lines += ["", "Memory (fresh interpreter, VmRSS growth; identities made before counting)",
                  f"  {pc['count']} cached contexts, private CA each: {pc['rss_kb'] / 1024:.1f} MB "
                  f"({pc['rss_kb'] / pc['count']:.1f} KB each), build {pc['build_ms']:.2f} ms median",
                  f"  default store via capath {cp['capath']}: {cp['rss_kb'] / cp['count']:.1f} KB, "
                  f"{cp['build_ms']:.2f} ms per context ({cp['count']} contexts)",
                  f"  default store via bundle file {cb['cafile']}: {cb['rss_kb'] / cb['count']:.0f} KB, "
                  f"{cb['build_ms']:.1f} ms per context ({cb['count']} contexts)",
                  f"  dyncert's automatic default trust: {mem['auto_trust']}"]
    adapters = result.get("adapters")
    if adapters:
        from .adapters import ROWS
        for client in ("requests", "httpx"):
            rows = [row for row in ROWS if row[0].startswith(client + "_")]
            lines += [""] + _rows(f"{client} against nginx ssl_verify_client on, GET /", rows, adapters["summary"],
                                  f"{client}_tempfiles")
    signer = result.get("signer")
    if signer and "summary" in signer:
        from .signer import ROWS as SIGNER_ROWS
        lines += [""] + _rows("signer-backed identity against openssl s_server -Verify 1 (full handshakes)",
                              SIGNER_ROWS, signer["summary"], "key_loaded")
    elif signer:
        lines += ["", f"signer: not measured: {signer.get('unsupported')}"]
    r = result["ratios"]
    if result.get("instances"):
        lines += instances_lines(result["instances"], r)
    if result.get("peers"):
        from .peerclients import table_lines
        lines += table_lines(result["peers"])
    if "python_vs_c_cpu_per_handshake" in r:
        lines += ["", f"Python/C: dyncert warm {r['warm_vs_limit_rate']:.2f}x the rate of openssl s_time; "
                      f"client CPU per handshake {r['python_vs_c_cpu_per_handshake']:.2f}x s_time's"]
    quick = meta.get("quick")
    lines += ["", "Goals (ratios are medians of per-round ratios)" + (
        ": QUICK MODE, few short rounds on a shared machine, so every verdict is indicative only (~); "
        "run `make bench` for the real ones" if quick else "")]
    for name, shown, ok in result["goals"]:
        mark = {True: "PASS", False: "FAIL", None: "----"}[ok]
        if quick and ok is not None:
            mark = "~" + mark.lower()  # a quick FAIL is noise as often as not: it must not read as a verdict
        lines.append(f"  {mark:<5} {name:<58} {shown}")
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
