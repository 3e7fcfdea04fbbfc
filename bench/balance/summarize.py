#!/usr/bin/env python3
"""Summarize bench/balance/run.sh output.

    python3 summarize.py [--service 2ms,5ms,10ms,20ms] [--limit 8] [--backends 4] RAW.tsv [RAW.tsv ...]

Several raw files (independent runs) are pooled; within-round ratios are only
taken within the same round of the same file. Every figure is the median over
rounds unless said otherwise. Tables:

1. Per target: req/s (and share of the ideal capacity), p50/p99/max latency,
   p99 ÷ HAProxy leastconn's p99 in the same round, the proxy's CPU per request
   (utime+stime of all its processes ÷ requests), and each backend's share of
   the responses, counted by wrk from the response bodies, with its distance
   from the ideal split (half the sum of absolute differences, in points).
2. The backends' view: mean requests present per backend (held + queued,
   Little's law from the backends' own counters), mean wait for a slot per
   backend, and backend connections opened per 1000 requests.
3. The issue's targets for Sluice's policies.
"""
import argparse
import csv
import os
import statistics
import sys

ORDER = [
    "haproxy:roundrobin", "haproxy:leastconn", "nginx:round_robin", "nginx:least_conn",
    "caddy:round_robin", "caddy:least_conn", "caddy:weighted_least_conn",
    "caddy:fast_response", "caddy:two_choices", "caddy:load_feedback",
]
SLUICE = {"weighted_least_conn", "fast_response", "two_choices", "load_feedback"}
REFERENCE = "haproxy:leastconn"
# The targets: fast_response and load_feedback at >= 5,000 req/s with
# p99 <= 30 ms, ahead of HAProxy leastconn on p99.
TARGET_RPS, TARGET_P99_MS = 5000.0, 30.0
TARGETED = {"fast_response", "load_feedback"}


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def parse_duration_ms(s):
    s = s.strip()
    for unit, f in (("ms", 1.0), ("us", 1e-3), ("µs", 1e-3), ("ns", 1e-6), ("s", 1e3)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * f
    raise ValueError("bad duration %r" % s)


def parse_stats(field):
    """'backend-1:served:wait:resid:inflight:conns;...' -> {index: (served, wait, resid, conns)}"""
    out = {}
    for part in field.split(";"):
        f = part.split(":")
        if len(f) < 6 or not f[0].startswith("backend-"):
            continue
        out[int(f[0][len("backend-"):])] = (int(f[1]), int(f[2]), int(f[3]), int(f[5]))
    return out


def parse_dist(field):
    out = {}
    for part in field.split(","):
        if "=" not in part:
            continue
        k, v = part.split("=", 1)
        key = int(k[len("backend-"):]) if k.startswith("backend-") else k
        out[key] = int(v)
    return out


def fmt_share(x):
    if x != x:
        return "-"
    return "%.0f" % x if x >= 9.95 else "%.1f" % x


def fmt(x, spec, dash="-"):
    return dash if x != x else spec % x


def table(head, rows, right=None):
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    right = right if right is not None else set(range(1, len(head)))
    lines = []

    def line(r):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        return "| " + " | ".join(cells) + " |"

    lines.append(line(head))
    lines.append("|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                                for i, w in enumerate(widths)) + "|")
    lines.extend(line(r) for r in rows)
    return "\n".join(lines)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service", default="2ms,5ms,10ms,20ms", help="backend service times (for the ideal split)")
    ap.add_argument("--limit", type=int, default=8, help="requests each backend serves at once")
    ap.add_argument("--backends", type=int, default=0, help="number of backends (default: one per service time)")
    ap.add_argument("raw", nargs="+")
    a = ap.parse_args(argv)

    service = [parse_duration_ms(s) for s in a.service.split(",")]
    if a.backends and len(service) == 1:
        service *= a.backends
    nb = len(service)
    cap = [a.limit * 1000.0 / s if s > 0 else float("inf") for s in service]
    ideal_rps = sum(cap)
    ideal = [100.0 * c / ideal_rps for c in cap]

    data, by_round, loads, notes = {}, {}, [], []
    for path in a.raw:
        npath = os.path.join(os.path.dirname(os.path.abspath(path)), "notes.txt")
        if os.path.exists(npath):
            notes.extend(l.strip() for l in open(npath) if l.strip())
        with open(path, newline="") as f:
            for r in csv.DictReader(f, delimiter="\t"):
                req = int(r["requests"])
                d = {
                    "rps": float(r["rps"]),
                    "p50": int(r["p50_us"]) / 1000, "p99": int(r["p99_us"]) / 1000,
                    "p999": int(r["p999_us"]) / 1000, "max": int(r["max_us"]) / 1000,
                    "errs": int(r["sock_errs"]), "status": int(r["status_errs"]),
                    "cpu": int(r["proxy_ticks"]) / int(r["hz"]) * 1e6 / req if req else float("nan"),
                    "load": float(r["load1"]), "req": req,
                }
                dist = parse_dist(r["responses"])
                tot = sum(dist.values())
                d["share"] = [100.0 * dist.get(i + 1, 0) / tot if tot else float("nan") for i in range(nb)]
                d["other"] = sum(v for k, v in dist.items() if not isinstance(k, int) or k > nb)
                d["tvd"] = 0.5 * sum(abs(s - i) for s, i in zip(d["share"], ideal)) if tot else float("nan")
                s0, s1 = parse_stats(r["backend_before"]), parse_stats(r["backend_after"])
                wall = int(r["wall_ns"])
                d["present"], d["wait"], d["conns"] = [], [], 0
                for i in range(1, nb + 1):
                    if i in s0 and i in s1:
                        served = s1[i][0] - s0[i][0]
                        d["present"].append((s1[i][2] - s0[i][2]) / wall if wall else float("nan"))
                        d["wait"].append((s1[i][1] - s0[i][1]) / served / 1e6 if served else float("nan"))
                        d["conns"] += s1[i][3] - s0[i][3]
                    else:
                        d["present"].append(float("nan"))
                        d["wait"].append(float("nan"))
                d["kconns"] = 1000.0 * d["conns"] / req if req else float("nan")
                t = r["target"]
                data.setdefault(t, []).append(d)
                by_round.setdefault((path, r["round"]), {})[t] = d
                loads.append(d["load"])
    if not data:
        print("no data", file=sys.stderr)
        return 1

    ratio = {}
    for rnd in by_round.values():
        ref = rnd.get(REFERENCE)
        if not ref or ref["p99"] <= 0:
            continue
        for t, d in rnd.items():
            ratio.setdefault(t, []).append(d["p99"] / ref["p99"])

    targets = [t for t in ORDER if t in data] + sorted(t for t in data if t not in ORDER)
    bcols = "/".join("b%d" % (i + 1) for i in range(nb))

    # ---------------- table 1
    head = ["proxy", "policy", "rounds", "req/s", "(min-max)", "of ideal", "p50 ms", "p99 ms",
            "max ms med/worst", "p99 vs HAProxy lc", "CPU us/req", "share %s %%" % bcols, "off ideal", "errors"]
    rows = []
    for t in targets:
        ds = data[t]
        proxy, pol = t.split(":", 1)
        rps = [d["rps"] for d in ds]
        mx = [d["max"] for d in ds]
        rs = ratio.get(t, [])
        shares = "/".join(fmt_share(med([d["share"][i] for d in ds])) for i in range(nb))
        errs = "%d/%d" % (sum(d["errs"] for d in ds), sum(d["status"] for d in ds))
        other = sum(d["other"] for d in ds)
        if other:
            errs += " (+%d other bodies)" % other
        rows.append([
            proxy + (" (Sluice)" if proxy == "caddy" and pol in SLUICE else ""), pol, str(len(ds)),
            "{:,.0f}".format(med(rps)), "%s-%s" % ("{:,.0f}".format(min(rps)), "{:,.0f}".format(max(rps))),
            "%.0f%%" % (100 * med(rps) / ideal_rps),
            "%.1f" % med([d["p50"] for d in ds]), "%.1f" % med([d["p99"] for d in ds]),
            "%.0f / %.0f" % (med(mx), max(mx)),
            ("%.2f" % med(rs) + (" (%.2f-%.2f)" % (min(rs), max(rs)) if len(rs) > 1 else "")) if rs else "-",
            fmt(med([d["cpu"] for d in ds]), "%.1f"), shares, fmt(med([d["tvd"] for d in ds]), "%.1f"), errs,
        ])
    print("Heterogeneous backends: service %s ms, %d at once each (queue beyond); ideal capacity %s req/s, split %s %%"
          % ("/".join("%g" % s for s in service), a.limit, "{:,.0f}".format(ideal_rps),
             "/".join("%.1f" % x for x in ideal)))
    print()
    print(table(head, rows, right=set(range(2, len(head) - 1))))
    print()
    print("Medians over rounds. 'p99 vs HAProxy lc' = median of within-round p99 / HAProxy leastconn p99 (range in brackets);")
    print("CPU = proxy utime+stime (all processes/threads) / requests; share = responses per backend counted from bodies;")
    print("off ideal = half the summed |share - ideal| in points (0 = ideal split); errors = socket / status>=400.")
    print("load1 during runs: median %.2f, range %.2f-%.2f" % (med(loads), min(loads), max(loads)))

    # ---------------- table 2
    head = ["proxy", "policy", "present %s" % bcols, "queue wait ms %s" % bcols, "backend conns/kreq"]
    rows = []
    for t in targets:
        ds = data[t]
        proxy, pol = t.split(":", 1)
        rows.append([
            proxy, pol,
            "/".join(fmt(med([d["present"][i] for d in ds]), "%.1f") for i in range(nb)),
            "/".join(fmt(med([d["wait"][i] for d in ds]), "%.1f") for i in range(nb)),
            fmt(med([d["kconns"] for d in ds]), "%.1f"),
        ])
    print()
    print("The backends' view (from their own counters over each run):")
    print()
    print(table(head, rows, right={2, 3, 4}))
    print()
    print("present = mean requests at the backend, held or waiting (%d slots each); queue wait = mean wait for a slot;" % a.limit)
    print("conns/kreq = connections the backends accepted per 1000 requests (about 0 = the proxy reuses them).")

    # ---------------- table 3
    sl = [t for t in targets if t.startswith("caddy:") and t.split(":", 1)[1] in SLUICE]
    if sl:
        print()
        print("Targets (issue: fast_response and load_feedback >= %s req/s, p99 <= %.0f ms, p99 below HAProxy leastconn's):"
              % ("{:,.0f}".format(TARGET_RPS), TARGET_P99_MS))
        for t in sl:
            ds = data[t]
            pol = t.split(":", 1)[1]
            rps, p99 = med([d["rps"] for d in ds]), med([d["p99"] for d in ds])
            rs = ratio.get(t, [])
            checks = [
                "req/s %s %s" % ("{:,.0f}".format(rps), "ok" if rps >= TARGET_RPS else "MISS"),
                "p99 %.1f ms %s" % (p99, "ok" if p99 <= TARGET_P99_MS else "MISS"),
                ("p99/HAProxy lc %.2f %s" % (med(rs), "ok" if med(rs) < 1 else "MISS")) if rs else "p99/HAProxy lc n/a (not run)",
                "b%d share %s%%" % (nb, fmt_share(med([d["share"][nb - 1] for d in ds]))),
            ]
            print("  %-22s %s%s" % (pol, ", ".join(checks), "" if pol in TARGETED else "   (no target set; for comparison)"))
    for n in notes:
        print("note: " + n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
