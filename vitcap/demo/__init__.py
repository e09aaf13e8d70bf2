"""`vitcap demo`: a local Gradio page to try a trained model (optional extra: `pip install -e '.[demo]'`).

- `views`: what the page shows, computed from a loaded pipeline without Gradio (uploads, decoding options,
  captions with per-word attention overlays, top-k labels with the attention rollout);
- `card`: the model card and the statement of how attention maps are aggregated;
- `examples`: example images written locally from the built-in shapes;
- `app`: `build_demo(pipeline) -> gradio.Blocks` (built, not launched), its callbacks and `launch`.

Only `vitcap.cli.demo` imports this package, and only `app` imports Gradio.
"""
