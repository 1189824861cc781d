#!/usr/bin/env python3
# The README's tables of the application evaluation, from its report:
#   python3 tests/eval/readme-table.py target/eval_apps.json
import json, sys
d = json.load(open(sys.argv[1]))
apps = ["nginx", "pyapp", "redis", "postgres"]
order = []
by = {}
for a in d["attacks"]:
    t = a["technique"]
    if t not in by:
        by[t] = {}
        order.append(t)
    by[t][a["app"]] = a
def cell(a):
    if a is None:
        return "n/a"
    r = "R" if a["rules_alone"] else "–"
    b = "B" if a["baseline_alone"] else "–"
    f = "**F**" if a["fused"] else "– **missed**"
    return f"{r} {b} {f}"
def esc(s):
    return s.replace("|", "\\|")
print("| technique | ATT&CK | nginx | pyapp | redis | postgres | what habitd's alert names (first application) |")
print("|---|---|---|---|---|---|---|")
for t in order:
    runs = by[t]
    first = next(iter(runs.values()))
    named = ""
    for app in apps:
        a = runs.get(app)
        if a and a["fused_named"]:
            named = a["fused_named"][0]
            break
    if len(named) > 140:
        named = named[:140] + "…"
    print(f"| {esc(first['name'])} (`{t}`) | {first['mitre']} | " + " | ".join(cell(runs.get(app)) for app in apps) + f" | {esc(named)} |")
s = d["summary"]
esc_n = sum(1 for a in d["attacks"] if a.get("escalated"))
print()
print(f"Runs: {s['runs']} technique×application; detected by rules alone {s['rules_alone']}, baseline alone {s['baseline_alone']}, habitd fused {s['fused']}; escalated: {esc_n} (runs whose alert was a rule hit raised one priority by novelty).")
print()
print("Benign alerts sent by habitd per step and application (in brackets: the rules' hits alone, which fusion suppressed):")
print()
steps = []
ben = {}
for b in d["benign"]:
    if b["step"] not in steps:
        steps.append(b["step"])
    ben[(b["step"], b["app"])] = b
print("| step | nginx | pyapp | redis | postgres |")
print("|---|---|---|---|---|")
for st in steps:
    cells = []
    for app in apps:
        b = ben.get((st, app))
        cells.append("" if b is None else f"{b['fused']} ({b['rules_alone']} rule hits)")
    print(f"| {st} | " + " | ".join(cells) + " |")
