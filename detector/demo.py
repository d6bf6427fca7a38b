"""``lisentry demo``: a simulated Tagami-style overlithiation run (hard carbon | Li6PS5Cl | Li,
50 mA/g with no lower limit) is written as Bruker experiment folders and an EC-Lab ``.mpt`` while
``watch`` follows it live; then ``label`` labels the finished run with a figure and a report."""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path


class _Console:
    """Turns watch's JSON lines into one readable line per frame (the events file keeps JSON)."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.buf = ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            ev = json.loads(line)
            if ev.get("event", "frame") != "frame":
                continue
            pot = ev.get("potential_V")
            pot = f"{pot * 1000:7.1f} mV" if pot is not None else "    n/a   "
            print(f"frame {ev['frame']:3d}  t={ev['t_s'] / 3600:5.2f} h  E={pot}  "
                  f"{ev['label']:18s} p(plating)={ev['p_plating_onset']:.2f} "
                  f"p(short)={ev['p_imminent_short']:.2f}"
                  f"{'  ALARM ' + ev['alarm'] if ev.get('alarm') else ''}", file=self.out, flush=True)
        return len(text)

    def flush(self):
        pass


def run_demo(workdir: Path | None = None, *, seed: int = 0, frame_interval_s: float = 0.15,
             model: str | None = None) -> Path:
    from lisentry.datasets.loading import LoadOptions
    from lisentry.datasets.sim.live import replay
    from lisentry.datasets.sim.run import simulate_run
    from lisentry.detector.label import RunJob, label_one, load_model
    from lisentry.detector.watch import WatchConfig, Watcher

    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lisentry-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    sim = simulate_run("hc_sulfide_overlithiation", seed, randomize=False, run_id="overlithiation-demo")
    log(f"simulated {len(sim.raws)} frames of a CC overlithiation run (true short at "
        f"{sim.t_short_s / 3600:.2f} h); writing them to {run_dir} as an acquisition would")
    bundle = load_model(model)
    stop = threading.Event()
    writer = threading.Thread(target=replay, args=(sim, run_dir),
                              kwargs={"frame_interval_s": frame_interval_s, "stop": stop}, daemon=True)
    writer.start()
    # wait for the first experiment folder and the log to appear
    mpt = run_dir / "echem" / f"{sim.run_id}.mpt"
    while not (run_dir / "nmr").exists() or not mpt.exists():
        time.sleep(0.05)
    events = workdir / "events.jsonl"
    watcher = Watcher(run_dir / "nmr", LoadOptions(echem=mpt, echem_tz="UTC"), bundle, events,
                      workdir / "watch.state.json",
                      config=WatchConfig(poll_s=0.05, until_idle_s=max(2.0, 10 * frame_interval_s)),
                      stdout=_Console())
    try:
        watcher.run()
    finally:
        stop.set()
        writer.join()
    labels = workdir / "labels.csv"
    outcome = label_one(RunJob(sim.run_id, run_dir / "nmr", labels,
                               LoadOptions(echem=mpt, echem_tz="UTC")), bundle,
                        plot=True, report=True, command_line="lisentry demo")
    alarms = ", ".join(f"{a['label']} from {a['start_t_s'] / 3600:.2f} h" for a in outcome.alarms) or "none"
    print(f"\nlabelled {outcome.n_frames} frames: alarms: {alarms}; true short at {sim.t_short_s / 3600:.2f} h")
    print(f"events (watch): {events}")
    print(f"labels (label): {labels}")
    print(f"figure:         {labels.with_suffix('.png')}")
    print(f"report:         {labels.with_suffix('.html')}")
    return workdir
