"""Markdown tables from drive.py's results: table.py RESULTS.jsonl"""
import json,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
best={}
for r in rows:
    if not r['disturbed']: best[(r['set'],r['op'],r['clients'])]=r
for op in ['put','get']:
    print(f"\n| set | op | clients | etcd ops/s | raftkv ops/s | ratio | etcd p50 / p99 µs | raftkv p50 / p99 µs | p99 ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in [1,16,64,256]:
        for st in ['set1','set2']:
            r=best.get((st,op,c))
            if not r: continue
            e,k=r['etcd'],r['raftkv']
            print(f"| {st[-1]} | {op} | {c} | {e['ops_per_s']:,.0f} | {k['ops_per_s']:,.0f} | {k['ops_per_s']/e['ops_per_s']:.2f}× | {e['p50_us']:,.0f} / {e['p99_us']:,.0f} | {k['p50_us']:,.0f} / {k['p99_us']:,.0f} | {k['p99_us']/e['p99_us']:.2f} |")
print()
for st in ['set1','set2']:
    for (s,op,c),r in sorted(best.items()):
        if s==st and op=='put' and c==256: print(st,'raftkv put 256 p999', r['raftkv']['p999_us'])
print('attempts', len(rows), 'disturbed', sum(1 for r in rows if r['disturbed']), 'errors', sum(r['etcd']['errors']+r['raftkv']['errors'] for r in rows), 'leaders', set((tuple(r['etcd_leader']),tuple(r['raftkv_leader'])) for r in rows))
print('probes', min(min(r['probe_before']['fsyncs_per_s'],r['probe_after']['fsyncs_per_s']) for r in rows), max(max(r['probe_before']['fsyncs_per_s'],r['probe_after']['fsyncs_per_s']) for r in rows), 'foreign max', max(max(r['etcd']['foreign_cores'],r['raftkv']['foreign_cores']) for r in rows))
