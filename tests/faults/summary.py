#!/usr/bin/env python3
"""The per-(job, fault) table of a fault campaign, from its runs.tsv (tests/faults/run)."""
import csv
import sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))

# A leftover the campaign cannot remove itself (a multipart upload) stays listed in the runs
# after the one that left it: count each orphan once, for the run that left it.
seen_orphans = set()
for r in rows:
    listed = set()
    if "[orphans: " in r["message"]:
        listed = set(r["message"].split("[orphans: ", 1)[1].rstrip("] ").split())
    new = listed - seen_orphans
    seen_orphans |= listed
    r["orphans"] = str(len(new))
    r["new_orphans"] = " ".join(sorted(new))
groups = defaultdict(list)
for r in rows:
    groups[(r["job"], r["fault"])].append(r)

print("| job | fault | runs | completed | identical | clear error | unclear error | killed | hangs | orphans | longest run (s) | longest exit after fault (s) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (job, fault), rs in sorted(groups.items()):
    count = lambda o: sum(1 for r in rs if r["outcome"] == o)
    identical = sum(1 for r in rs if r["identical"] == "yes")
    orphans = sum(int(r["orphans"] or 0) for r in rs)
    longest = max(float(r["seconds"]) for r in rs)
    after = [float(r["after_fault"]) for r in rs if r["after_fault"] not in ("-", "")]
    print(f"| {job} | {fault} | {len(rs)} | {count('completed')} | {identical} | {count('clear-error')} "
          f"| {count('unclear-error')} | {count('killed')} | {count('hang')} | {orphans} | {longest:.0f} "
          f"| {max(after):.0f} |" if after else
          f"| {job} | {fault} | {len(rs)} | {count('completed')} | {identical} | {count('clear-error')} "
          f"| {count('unclear-error')} | {count('killed')} | {count('hang')} | {orphans} | {longest:.0f} | - |")

print()
print(f"{len(rows)} runs. Errors seen (one example per distinct message start):")
seen = set()
for r in rows:
    if r["outcome"] in ("completed",) and "[" not in r["message"]:
        continue
    key = (r["job"], r["fault"], r["message"][:60])
    if key in seen or not r["message"]:
        continue
    seen.add(key)
    print(f"- {r['job']}/{r['fault']} ({r['outcome']}): {r['message'].split(' [orphans: ')[0][:240]}"
          + (f" — new orphans: {r['new_orphans']}" if r["new_orphans"] else ""))
