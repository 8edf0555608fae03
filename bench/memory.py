"""RSS cost of cached contexts, measured in a fresh interpreter: `python -m bench.memory` prints JSON.

Identities are made first; only the contexts are counted (VmRSS after minus before).
"""

import argparse
import ctypes
import gc
import json
import os
import ssl
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kb():
    """VmRSS of this process in KiB (/proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def private_ca_identities(count):
    """`count` (ClientIdentity, CA PEM) pairs, each under its own private CA."""
    import trustme

    from dyncert.identity import ClientIdentity
    out = []
    for n in range(count):
        ca = trustme.CA(organization_name=f"bench ca {n}")
        leaf = ca.issue_cert(f"id{n}@example.com", common_name=f"id {n}")
        chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
        out.append((ClientIdentity.from_pem(chain, leaf.private_key_pem.bytes()), ca.cert_pem.bytes()))
    return out


def _settle():
    """Collect garbage and hand free heap back to the OS, so that growth shows in VmRSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: figures may read low


def build(cache, pairs):
    """Cache a context for every (identity, ca); (RSS growth KiB, median build ms). The cache stays alive."""
    _settle()
    before = rss_kb()
    times = []
    for identity, ca in pairs:
        started = time.perf_counter()
        cache.client_context(identity, ca)
        times.append(time.perf_counter() - started)
    gc.collect()
    times.sort()
    return rss_kb() - before, times[len(times) // 2] * 1000


def measure(count, default_count, bundle_count):
    """The three figures: private CAs, default store via capath (lazy), default store via the bundle file."""
    from dyncert import context
    pairs = private_ca_identities(count)
    extra = private_ca_identities(max(default_count, bundle_count))
    context.client_context(pairs[0][0], pairs[0][1])  # first use pays OpenSSL's own lazy set-up
    result = {"openssl": ssl.OPENSSL_VERSION}
    caches = [context.ContextCache(maxsize=count + 1)]  # all kept alive: freed memory would be reused
    growth, ms = build(caches[-1], pairs)
    result["private_ca"] = {"count": count, "rss_kb": growth, "build_ms": ms}
    paths = ssl.get_default_verify_paths()
    for name, trust, n in (("default_capath", {"capath": paths.capath}, default_count),
                           ("default_bundle", {"cafile": paths.cafile}, bundle_count)):
        context.configure_default_trust(**trust)
        caches.append(context.ContextCache(maxsize=n + 1))
        growth, ms = build(caches[-1], [(identity, None) for identity, _ in extra[:n]])
        result[name] = {"count": n, "rss_kb": growth, "build_ms": ms, **trust}
    context.configure_default_trust()
    auto = context.default_trust()
    result["auto_trust"] = auto
    return result


def run(count=1000, default_count=200, bundle_count=20):
    """Run `measure` in a fresh interpreter and return its JSON."""
    out = subprocess.run([sys.executable, "-m", "bench.memory", "--count", str(count),
                          "--default-count", str(default_count), "--bundle-count", str(bundle_count)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"bench.memory failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--default-count", type=int, default=200)
    parser.add_argument("--bundle-count", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(measure(args.count, args.default_count, args.bundle_count)))


if __name__ == "__main__":
    main()
