#!/usr/bin/env python3
"""Interleaved etcd / raftkv durable benchmark driver.
Usage: drive.py SET_NAME OUT.jsonl
Environment: ETCD_LEADER, RKV_LEADER (host:port of each leader's client port), ETCD_PIDS and
RKV_PIDS (files listing the servers' PIDs), KVLOAD (the kvload binary), PROBE_DIR (a directory on
the benchmarked disk), QUIET_WINDOWS, ATTEMPTS, ONLY (e.g. "put:64").
Setup used in docs/benchmarks/durable.md: etcd from ../shared/tools/kvload/etcd-cluster.sh, raftkv
as three `raftkv serve` processes (see scripts/bench/cluster.sh), both preloaded with
`kvload --op get --preload`.
For each config: fsync probe, etcd run, raftkv run, fsync probe. A pair is repeated (max 2
extra attempts) if a probe is < 1500 fsyncs/s or foreign CPU during either run > 0.15 cores.
Foreign CPU = CPU ticks of processes other than the 6 servers, kvload and this driver
(sampled every 0.25 s from /proc, so processes that exit mid-run are counted up to their last sample).
"""
import json, os, subprocess, sys, time

HZ = os.sysconf("SC_CLK_TCK")
KVLOAD = os.environ.get("KVLOAD", "/tmp/kvload-target/release/kvload")
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared/tools/kvload/fsync-probe.py")
PROBE_DIR = os.environ.get("PROBE_DIR", "/tmp/benchdur")
ETCD_PIDS = [int(x) for x in open(os.environ.get("ETCD_PIDS", "/tmp/benchdur/etcd/pids")).read().split()]
RKV_PIDS = [int(x) for x in open(os.environ.get("RKV_PIDS", "/tmp/rkv/pids")).read().split()]
ETCD_LEADER = os.environ.get("ETCD_LEADER", "127.0.0.1:23791")
RKV_LEADER = os.environ.get("RKV_LEADER", "127.0.0.1:6393")
CONFIGS = [("put", 1), ("put", 16), ("put", 64), ("put", 256), ("get", 1), ("get", 64)]
SET = sys.argv[1]
OUT = sys.argv[2]
only = os.environ.get("ONLY")  # e.g. "put:64"


def snapshot():
    d = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            name = s[s.index("(") + 1:s.rindex(")")]
            fs = s.rsplit(")", 1)[1].split()
            d[int(p)] = (name, int(fs[11]) + int(fs[12]), int(fs[1]))
        except (OSError, ValueError, IndexError):
            pass
    return d


def run_kvload(args):
    mine = set(ETCD_PIDS + RKV_PIDS + [os.getpid()])
    first = snapshot()
    last = dict(first)
    t0 = time.time()
    p = subprocess.Popen([KVLOAD] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mine.add(p.pid)
    while p.poll() is None:
        time.sleep(0.25)
        last.update(snapshot())
    out, err = p.communicate()
    last.update(snapshot())
    wall = time.time() - t0
    foreign, kern, who = 0, 0, {}
    for pid, (name, ticks, ppid) in last.items():
        if pid in mine:
            continue
        d = ticks - (first[pid][1] if pid in first and first[pid][0] == name else 0)
        if d <= 0:
            continue
        if ppid == 2 or pid == 2:
            kern += d
        else:
            foreign += d
            who[name] = who.get(name, 0) + d
    def cpu(pids):
        return sum(last[x][1] - first[x][1] for x in pids if x in last and x in first) / HZ
    lines = out.strip().splitlines()
    res = json.loads(lines[-1])
    res.update(
        human=lines[0], stderr=err.strip()[-2000:], wall_s=round(wall, 2),
        etcd_cpu_s=round(cpu(ETCD_PIDS), 2), raftkv_cpu_s=round(cpu(RKV_PIDS), 2),
        kvload_cpu_s=round((last[p.pid][1] if p.pid in last else 0) / HZ, 2),
        foreign_cores=round(foreign / HZ / wall, 3), kernel_thread_cores=round(kern / HZ / wall, 3),
        foreign_top=sorted(((n, round(t / HZ, 2)) for n, t in who.items()), key=lambda x: -x[1])[:3],
    )
    return res


def wait_quiet(limit=0.10, window=3.0, max_wait=900, need=int(os.environ.get("QUIET_WINDOWS", "5"))):
    """Block until processes other than the servers and this driver use < limit cores over window s."""
    mine = set(ETCD_PIDS + RKV_PIDS + [os.getpid()])
    t_start = time.time()
    streak = 0
    while True:
        a = snapshot(); time.sleep(window); b = snapshot()
        used = 0
        for pid, (name, ticks, ppid) in b.items():
            if pid in mine or ppid == 2 or pid == 2:
                continue
            used += ticks - (a[pid][1] if pid in a and a[pid][0] == name else 0)
        cores = used / HZ / window
        streak = streak + 1 if cores < limit else 0
        if streak >= need or time.time() - t_start > max_wait:
            return round(cores, 3), round(time.time() - t_start, 1)


def probe():
    out = subprocess.run(["python3", PROBE, PROBE_DIR, "3"], capture_output=True, text=True).stdout
    return json.loads(out)


def leaders():
    e = subprocess.run(["etcdctl", "--endpoints", "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793",
                        "endpoint", "status", "-w", "json"], capture_output=True, text=True,
                       env=dict(os.environ, ETCDCTL_API="3")).stdout
    el = [s["Endpoint"] for s in json.loads(e) if s["Status"]["leader"] == s["Status"]["header"]["member_id"]]
    r = subprocess.run(["redis-cli", "-p", RKV_LEADER.rsplit(":", 1)[1], "info", "replication"], capture_output=True, text=True).stdout
    rl = [l.split(":")[1].strip() for l in r.splitlines() if l.startswith("raft_leader_id")]
    return el, rl


with open(OUT, "a") as f:
    for op, c in CONFIGS:
        if only and only != f"{op}:{c}":
            continue
        for attempt in range(int(os.environ.get("ATTEMPTS", "6"))):
            q = wait_quiet()
            print(f"   quiet: foreign {q[0]} cores after waiting {q[1]} s ({time.strftime('%H:%M:%S')})", flush=True)
            el, rl = leaders()
            pb = probe()
            common = ["--op", op, "--clients", str(c), "--warmup", "2", "--duration", "10",
                      "--key-size", "8", "--value-size", "256", "--keys", "100000"]
            re_ = run_kvload(["--target", "etcd", "--endpoints", ETCD_LEADER, "--label", f"{SET}-etcd-{op}-c{c}"] + common)
            rr = run_kvload(["--target", "resp", "--addr", RKV_LEADER, "--label", f"{SET}-raftkv-{op}-c{c}"] + common)
            pa = probe()
            disturbed = []
            if min(pb["fsyncs_per_s"], pa["fsyncs_per_s"]) < 1500:
                disturbed.append("fsync")
            if max(re_["foreign_cores"], rr["foreign_cores"]) > 0.15:
                disturbed.append("foreign_cpu")
            for r in (re_, rr):
                print(f"[{SET} a{attempt}] {r['human']}  cpu etcd={r['etcd_cpu_s']} rkv={r['raftkv_cpu_s']} kvload={r['kvload_cpu_s']} foreign={r['foreign_cores']} {r['foreign_top']}", flush=True)
                if r["errors"] or r["get_misses"]:
                    print("   errors/misses:", r["errors"], r["get_misses"], r["stderr"][:500], flush=True)
            print(f"   probes before={pb['fsyncs_per_s']} after={pa['fsyncs_per_s']} leaders etcd={el} raftkv={rl} disturbed={disturbed}", flush=True)
            rec = dict(set=SET, op=op, clients=c, attempt=attempt, probe_before=pb, probe_after=pa,
                       etcd_leader=el, raftkv_leader=rl, disturbed=disturbed, quiet_before=q, etcd=re_, raftkv=rr,
                       at=time.strftime("%H:%M:%S"))
            f.write(json.dumps(rec) + "\n"); f.flush()
            if not disturbed:
                break
