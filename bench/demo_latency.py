"""Click-to-caption latency of `vitcap demo` in headless Chromium; prints one JSON line.

    python bench/demo_latency.py --checkpoint runs/demo_cnn/checkpoints/best.ckpt --clicks 20

The page is served by this process on 127.0.0.1 (as `vitcap demo` serves it: `build_demo` + `launch`, the model
warmed up once). Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium through the browser test's
`DemoPage`) uploads the example images in turn and clicks Caption; each click is timed inside the page with
`performance.now()`, from the click until the caption is shown and the attention picture has loaded: what a person
waits for. Uploads are not timed. The first `--warmup` clicks are left out. `model_ms` is the server's share of each
click, as the page's status line reports it: the model call (`views.caption_view`, the checkpoint's decoding with
attention maps); the rest is Gradio, the network stack and the browser.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
from common import cpu_name, load_avg  # noqa: E402

TARGET_MS = 300.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help=".ckpt or export folder of a captioner")
    parser.add_argument("--clicks", type=int, default=20, help="timed clicks")
    parser.add_argument("--warmup", type=int, default=2, help="untimed clicks first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)

    import gradio
    import torch

    import vitcap
    from tests.test_demo_browser import DemoPage, chromium, find_chromium, serve
    from vitcap.demo.examples import write_examples

    torch.set_num_threads(args.threads)
    found = find_chromium()
    if found is None:
        print("no Chromium found: apt-get install chromium chromium-driver", file=sys.stderr)
        return 2
    pipeline = vitcap.load(args.checkpoint)
    before = load_avg()
    with tempfile.TemporaryDirectory() as tmp:
        images = write_examples(tmp, "captioning", pipeline.preprocessing["img_size"], num=4)
        click_ms, model_ms, captions = [], [], []
        with serve(pipeline, args.checkpoint) as url, chromium(*found) as driver:
            page = DemoPage(driver, url)
            for i in range(args.warmup + args.clicks):
                page.upload(images[i % len(images)])
                ms = page.click_caption()
                if i >= args.warmup:
                    click_ms.append(ms)
                    captions.append(page.caption())
                    model_ms.append(float(re.search(r"(\d+) ms on", page.text("status")).group(1)))
    version = subprocess.run([found[0], "--version"], capture_output=True, text=True).stdout.strip()
    median = statistics.median(click_ms)
    row = {
        "bench": "demo_latency",
        "checkpoint": str(args.checkpoint),
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "gradio": gradio.__version__,
        "browser": version,
        "load_avg_1m_before": before,
        "clicks": len(click_ms),
        "click_ms_median": round(median, 1),
        "click_ms_p90": round(statistics.quantiles(click_ms, n=10)[-1], 1) if len(click_ms) > 1 else round(median, 1),
        "click_ms_max": round(max(click_ms), 1),
        "model_ms_median": round(statistics.median(model_ms), 1),
        "click_ms": [round(ms, 1) for ms in click_ms],
        "example_caption": captions[0],
        "load_avg_1m_after": load_avg(),
        "target_ms": TARGET_MS,
        "target_met": median <= TARGET_MS,
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
