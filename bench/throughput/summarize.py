#!/usr/bin/env python3
"""Summarize bench/throughput/run.sh output.

    python3 summarize.py RAW.tsv [DIST.tsv]
    python3 summarize.py run1/raw.tsv run2/raw.tsv   # pool several runs

Per target: median req/s; median of the within-round ratio req/s / round_robin
req/s (the key figure); median p50/p99 latency; median Caddy CPU per request
(utime+stime over the wrk run / requests) and its within-round ratio to
round_robin; TCP connections opened per 1000 requests (keep-alive reuse
towards the backends; wrk's own CONNS connections are included); total socket
errors and status>=400 responses.
"""
import csv
import statistics
import sys

BASELINE = "round_robin"
TARGET_RATIO = 0.97


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs, dists = [], []
    for path in argv:
        rows = read_tsv(path)
        if rows and "responses_per_backend" in rows[0]:
            dists.extend(rows)
        else:
            runs.append((path, rows))

    order, data = [], {}  # target -> list of row dicts (with derived fields)
    by_round = {}  # (file, round) -> {target: row}
    for path, rows in runs:
        for r in rows:
            t = r["target"]
            req = int(r["requests"])
            secs = int(r["caddy_ticks"]) / int(r["hz"])
            d = {
                "rps": float(r["rps"]),
                "p50": int(r["p50_us"]) / 1000,
                "p99": int(r["p99_us"]) / 1000,
                "errs": int(r["sock_errs"]),
                "status": int(r["status_errs"]),
                "cpu": secs * 1e6 / req if req else float("nan"),
                "load": float(r["load1"]),
                "opens": int(r["tcp_opens"]) * 1000 / req if r.get("tcp_opens") and req else float("nan"),
            }
            if t not in data:
                order.append(t)
                data[t] = []
            data[t].append(d)
            by_round.setdefault((path, r["round"]), {})[t] = d
    if not data:
        print("no data", file=sys.stderr)
        return 1
    if BASELINE in order:
        order.remove(BASELINE)
        order.insert(0, BASELINE)

    ratio, cpu_ratio = {}, {}
    for rnd in by_round.values():
        base = rnd.get(BASELINE)
        if not base:
            continue
        for t, d in rnd.items():
            if base["rps"] > 0:
                ratio.setdefault(t, []).append(d["rps"] / base["rps"])
            if base["cpu"] > 0:
                cpu_ratio.setdefault(t, []).append(d["cpu"] / base["cpu"])

    head = ["policy", "runs", "req/s", "vs rr", "(min-max)", "p50 ms", "p99 ms",
            "CPU us/req", "CPU vs rr", "conns/kreq", "errors", ""]
    table = []
    for t in order:
        ds = data[t]
        rs = ratio.get(t, [])
        mr = med(rs)
        flag = ""
        if t != BASELINE and rs and mr < TARGET_RATIO:
            flag = "< %.2f" % TARGET_RATIO
        errs = sum(d["errs"] for d in ds)
        status = sum(d["status"] for d in ds)
        table.append([
            t + (" (baseline)" if t == BASELINE else ""),
            str(len(ds)),
            "{:,.0f}".format(med([d["rps"] for d in ds])),
            "%.3f" % mr if rs else "-",
            "%.2f-%.2f" % (min(rs), max(rs)) if rs else "-",
            "%.2f" % med([d["p50"] for d in ds]),
            "%.2f" % med([d["p99"] for d in ds]),
            "%.1f" % med([d["cpu"] for d in ds]),
            "%.3f" % med(cpu_ratio[t]) if cpu_ratio.get(t) else "-",
            "%.1f" % med([d["opens"] for d in ds]),
            "%d/%d" % (errs, status),
            flag,
        ])
    widths = [max(len(row[i]) for row in table + [head]) for i in range(len(head))]
    left = {0, len(head) - 1}

    def fmt(row):
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    print(fmt(head))
    print("  ".join("-" * w for w in widths).rstrip())
    for row in table:
        print(fmt(row))
    loads = [d["load"] for ds in data.values() for d in ds]
    print()
    print("medians over %d round(s); 'vs rr' = median of within-round req/s ratios to round_robin "
          "(target >= %.2f);\nCPU = Caddy utime+stime / requests; conns/kreq = TCP connections opened "
          "(wrk + Caddy->backends) per 1000 requests;\nerrors = socket errors / status>=400; "
          "load1 during runs %.2f-%.2f" % (len(by_round), TARGET_RATIO, min(loads), max(loads)))

    if dists:
        print()
        print("warm-up responses per backend (%):")
        for r in dists:
            parts = [p.split("=", 1) for p in r["responses_per_backend"].split(",") if "=" in p]
            total = sum(int(n) for _, n in parts) or 1
            share = " ".join("%s=%.0f" % (k.replace("backend-", "b"), 100 * int(n) / total) for k, n in parts)
            print("  %-28s %s" % (r["target"], share or "(none)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
