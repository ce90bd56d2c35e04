"""A burst of requests against a running app: N `/write` (a text of CHARS characters) and N `/generate` (700
points) sent at once, each from its own client; prints each kind's time alone, how many were served, their
latency p50 / p95 / max, and how many requests broke the bound docs/limits.md sets: a latency of at most twice the
time alone times the requests of its kind served up to it (the ones ahead of it, and itself).

    handwriting-hm app --port 7860 &
    python -m app.burst http://127.0.0.1:7860/ 20 80
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client

WRITE = dict(bias=1.0, temperature=1.0, style="none", style_line="", style_strokes="", style_text="", align="left",
             colour_by="layer1", marker_layer=2, straighten=False)
GENERATE = dict(n_points=700, n_samples=1, bias=0.0, temperature=1.0, colour_by="strokes", marker_layer=0,
                straighten=False)


def request(url: str, kind: str, seed: int, text: str,
            together: threading.Barrier | None = None) -> tuple[str, float, str]:
    """(kind, seconds from sending to the answer, "ok" or the first line of the error). With `together`, the
    request is sent once every client of the burst is connected: connecting is not part of the burst."""
    client = Client(url, verbose=False)
    if together is not None:
        together.wait()
    start = time.monotonic()
    try:
        if kind == "write":
            client.predict(text=text, seed=seed, **WRITE, api_name="/write")
        else:
            client.predict(seed=seed, **GENERATE, api_name="/generate")
        return kind, time.monotonic() - start, "ok"
    except Exception as error:  # a refusal ("Queue is full") is a result of the burst, not a failure of the script
        return kind, time.monotonic() - start, str(error).splitlines()[0][:80]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("n", type=int, help="requests of each kind")
    parser.add_argument("chars", type=int, help="characters of the text each /write writes")
    args = parser.parse_args()
    text = ("the quick brown fox jumps over the lazy dog " * 10)[:args.chars].strip()
    alone = {kind: request(args.url, kind, 99, text)[1] for kind in ("write", "generate")}
    print("alone", {kind: round(seconds, 2) for kind, seconds in alone.items()}, flush=True)
    jobs = [("write", seed) for seed in range(args.n)] + [("generate", seed) for seed in range(args.n)]
    together = threading.Barrier(len(jobs))
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: request(args.url, *job, text, together), jobs))
    print("burst wall", round(max(seconds for _, seconds, _ in results), 1))
    for kind in ("write", "generate"):
        times = sorted(seconds for k, seconds, outcome in results if k == kind and outcome == "ok")
        refused = [outcome for k, _, outcome in results if k == kind and outcome != "ok"]
        over = [i for i, seconds in enumerate(times) if seconds > 2 * alone[kind] * (i + 1)]
        if times:
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            late = [f"#{i + 1} {times[i]:.1f} s > {2 * alone[kind] * (i + 1):.1f} s" for i in over]
            last_bound = 2 * alone[kind] * (len(times) - 1)
            print(f"{kind}: served {len(times)}, refused {len(refused)} {refused[:2]}, p50 {statistics.median(times):.1f}"
                  f" s, p95 {p95:.1f} s, max {times[-1]:.1f} s; over the bound: {len(over)} {late}; the last against "
                  f"twice its time alone times the {len(times) - 1} ahead of it: {times[-1]:.1f} s <= {last_bound:.1f} s "
                  f"is {times[-1] <= last_bound}")


if __name__ == "__main__":
    main()
