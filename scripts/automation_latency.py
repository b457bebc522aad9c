"""Event -> automation latency (BENCHMARKS.md): creates N booked appointments
against a server started with the example workflows and the key below, then
reads the events and the appointment-reminders runs back and prints, from the
server's own timestamps, how long from each event to its run's start and to
its confirmation SMS step.

    EVENTFLOW_BOOTSTRAP_API_KEY=efk_autolatency_benchmark_key_0001 \
      eventflow serve --listen 127.0.0.1:7790 --workflows workflows/examples &
    python3 scripts/automation_latency.py 300
"""
import json, subprocess, time, urllib.request, os, statistics, sys
base = "http://127.0.0.1:7790"
key = "efk_autolatency_benchmark_key_0001"
def req(method, path, body=None):
    r = urllib.request.Request(base + path, method=method, headers={"authorization": "Bearer " + key, "content-type": "application/json"},
                               data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(r) as resp:
        return json.loads(resp.read() or b"null")
p = req("POST", "/v1/patients", {"firstName": "A", "lastName": "B", "phone": "+15551230001"})
n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
for i in range(n):
    req("POST", "/v1/appointments", {"patientId": p["id"], "start": "2027-01-10T09:00:00Z", "status": "booked"})
    time.sleep(0.02)
time.sleep(2)
events = {}
after = 0
while True:
    r = req("GET", f"/v1/events?after={after}&limit=1000&types=appointment.created")
    for e in r["data"]:
        events[e["id"]] = e["createdAt"]
    if not r["data"]: break
    after = r["nextAfter"]
runs = {}
cursor = ""
while True:
    r = req("GET", f"/v1/workflow-runs?workflow=appointment-reminders&limit=1000{cursor}")
    for run in r["data"]:
        runs[run["id"]] = run
    if not r["nextCursor"]: break
    cursor = "&cursor=" + r["nextCursor"]
from datetime import datetime
def ts(s): return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
lat_start, lat_sms = [], []
for run in runs.values():
    e = events.get(run["eventId"])
    if not e: continue
    lat_start.append((ts(run["startedAt"]) - ts(e)) * 1000)
    lat_sms.append((ts(run["steps"][0]["at"]) - ts(e)) * 1000)
def pct(v, q): v = sorted(v); return v[min(len(v)-1, int(q*len(v)))]
print(json.dumps({"runs": len(lat_sms), "start_p50_ms": pct(lat_start, .5), "start_p99_ms": pct(lat_start, .99),
                  "sms_step_p50_ms": pct(lat_sms, .5), "sms_step_p99_ms": pct(lat_sms, .99), "sms_step_max_ms": max(lat_sms)}))
