"""The `vitcap demo` page: `build_demo(pipeline)` returns a Gradio `Blocks`, built but not launched.

The callbacks are plain functions of this module (`caption_outputs`, `word_outputs`, `classify_outputs`,
`clear_outputs`) over `vitcap.demo.views`, so tests call them without a server or a browser. The caption and
classify events take the upload unprocessed (`preprocess=False`, a file payload in Gradio's upload folder): Gradio's
own image preprocessing would open the file with Pillow before vitcap's checks, so a file that is not an image, or a
decompression bomb, would end as a generic error instead of a message naming the file. User errors (`UserError`:
bad image, bad decoding settings) become a message in the page's status line; the server keeps serving.

Nothing here phones home: analytics are off, there is no share link, the example images are written locally, and
`launch` binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from vitcap.data.images import load_image
from vitcap.demo.card import attention_note, code, escape, model_card, rollout_note
from vitcap.demo.examples import write_examples
from vitcap.demo.views import (
    DECODING_MODES,
    DEFAULT_MAX_PIXELS,
    DISPLAY_SIZE,
    CaptionView,
    caption_view,
    classify_view,
    decoding_options,
    read_upload,
    warm_up,
)
from vitcap.errors import UserError, one_line
from vitcap.inference import CaptionPipeline, ClassifyPipeline

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_FILE_SIZE",
    "build_demo",
    "caption_outputs",
    "classify_outputs",
    "clear_outputs",
    "launch",
    "word_outputs",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_FILE_SIZE = "50mb"  # uploads above this are refused by Gradio before they reach the model
MAX_CAPTIONS = 5
# A large caption; small inputs (the 32-64 px shapes) shown at the box's size, pixels kept sharp.
CSS = """
#caption textarea {font-size: 1.3rem; font-weight: 600}
#input-image img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}
"""


# ------------------------------------------------------------------------------------------------------ callbacks
def _problem(what: str, error: UserError) -> str:
    return f"⚠️ **{what}:** {escape(one_line(error))}"


def _attention_update(view: CaptionView, index: int) -> dict[str, Any]:
    word = view.words[index]
    share = view.grid_share(index)
    where = f", {share:.0%} of it on the image grid" if share < 0.995 else ""
    return gr.update(value=view.word_overlay(index), label=f"Attention of “{word}” (word {index + 1}{where})")


def clear_outputs() -> tuple[Any, ...]:
    """Outputs of the caption page for a new image: nothing captioned yet."""
    return "", [], gr.update(choices=[], value=None), gr.update(value=None, label="Attention"), "", None


def caption_outputs(
    pipeline: CaptionPipeline,
    upload: Any,
    mode: str,
    beams: float,
    temperature: float,
    top_p: float,
    max_length: float,
    num_captions: float,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[Any, ...]:
    """The caption button: caption, n-best rows, word choices, first word's heat map, status line, state.

    ``upload`` is a path or Gradio's file payload (see `views.read_upload`); the state is the `CaptionView` that
    `word_outputs` draws from (None after a failure).
    """
    try:
        image, name = read_upload(upload, max_pixels)
        decoding, note = decoding_options(mode, beams, temperature, top_p, max_length, num_captions)
        view = caption_view(pipeline, image, decoding)
    except UserError as e:
        return "", [], gr.update(choices=[], value=None), gr.update(value=None), _problem("Could not caption", e), None
    rows = [[rank + 1, caption, round(score, 3)] for rank, (caption, score) in enumerate(view.captions)]
    status = f"{code(name)}: {mode}, {view.seconds * 1000:.0f} ms on {pipeline.device.type}"
    status += f". Note: {note}." if note else ""
    if not view.words:
        status += ". The caption has no words, so there is no attention to show."
        return view.caption, rows, gr.update(choices=[], value=None), gr.update(value=None), status, view
    choices = gr.update(choices=view.word_choices(), value=0)
    return view.caption, rows, choices, _attention_update(view, 0), status, view


def word_outputs(view: CaptionView | None, index: int | None) -> dict[str, Any]:
    """The word picker: the heat map of word ``index`` of the captioned image (nothing before a caption)."""
    if view is None or index is None or not 0 <= int(index) < len(view.words):
        return gr.update(value=None)
    return _attention_update(view, int(index))


def classify_outputs(
    pipeline: ClassifyPipeline, upload: Any, top_k: float, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[Any, ...]:
    """The classify button: top-k labels, the rollout overlay and the status line."""
    try:
        image, name = read_upload(upload, max_pixels)
        view = classify_view(pipeline, image, int(round(top_k)))
    except UserError as e:
        return None, None, _problem("Could not classify", e)
    status = f"{code(name)}: {view.seconds * 1000:.0f} ms on {pipeline.device.type}"
    status += f". No heat map: {view.note}." if view.note else ""
    return view.labels, view.rollout, status


# ----------------------------------------------------------------------------------------------------- the page
def _image_input(webcam: bool) -> gr.Image:
    sources = ["upload", "clipboard", "webcam"] if webcam else ["upload", "clipboard"]
    return gr.Image(
        label="Image", type="filepath", image_mode=None, sources=sources, elem_id="input-image", height=DISPLAY_SIZE
    )


def _examples(image: gr.Image, paths: list[Path]) -> None:
    gr.Examples(
        [[str(p)] for p in paths],
        inputs=[image],
        label="Examples: built-in shapes the model never saw",
        elem_id="examples",
    )


def _caption_page(pipeline: CaptionPipeline, examples: list[Path], max_pixels: int | None, webcam: bool) -> None:
    g = pipeline.generation
    longest = max(1, int(pipeline.model.decoder.max_len))
    mode = "sampling" if g.do_sample else "beam search" if g.num_beams > 1 else "greedy"
    with gr.Row():
        with gr.Column():
            image = _image_input(webcam)
            _examples(image, examples)
            with gr.Accordion("Decoding", open=True):
                strategy = gr.Radio(list(DECODING_MODES), value=mode, label="Strategy", elem_id="strategy")
                with gr.Row():
                    beams = gr.Slider(2, 10, value=max(2, g.num_beams), step=1, label="Beam width")
                    count = gr.Slider(1, MAX_CAPTIONS, value=1, step=1, label="Captions (n-best / samples)")
                with gr.Row():
                    temperature = gr.Slider(0.1, 2.0, value=g.temperature, step=0.05, label="Temperature (sampling)")
                    top_p = gr.Slider(0.05, 1.0, value=g.top_p, step=0.05, label="Top-p (sampling)")
                max_length = gr.Slider(
                    1, longest, value=min(g.max_length, longest), step=1, label="Max length (tokens, end included)"
                )
            button = gr.Button("Caption", variant="primary", elem_id="caption-button")
        with gr.Column():
            caption = gr.Textbox(label="Caption", elem_id="caption", interactive=False)
            nbest = gr.Dataframe(
                headers=["#", "caption", "mean log-prob"],
                label="n-best",
                elem_id="nbest",
                interactive=False,
                max_height=220,
            )
            words = gr.Radio([], label="Pick a word to see where the model looked", elem_id="words")
            attention = gr.Image(
                label="Attention", type="pil", format="png", interactive=False, elem_id="attention", height=DISPLAY_SIZE
            )
            status = gr.Markdown(elem_id="status")
            gr.Markdown(attention_note(pipeline), elem_id="attention-note")
    view = gr.State(None)
    outputs = [caption, nbest, words, attention, status, view]
    inputs = [image, strategy, beams, temperature, top_p, max_length, count]
    button.click(
        partial(caption_outputs, pipeline, max_pixels=max_pixels),
        inputs,
        outputs,
        preprocess=False,
        api_name="caption",
        show_progress="minimal",
    )
    words.input(word_outputs, [view, words], attention, api_name="word", show_progress="hidden")
    image.change(clear_outputs, None, outputs, api_visibility="private", show_progress="hidden")


def _classify_page(pipeline: ClassifyPipeline, examples: list[Path], max_pixels: int | None, webcam: bool) -> None:
    classes = len(pipeline.class_names)
    with gr.Row():
        with gr.Column():
            image = _image_input(webcam)
            _examples(image, examples)
            top_k = gr.Slider(1, classes, value=min(5, classes), step=1, label="Top-k labels")
            button = gr.Button("Classify", variant="primary", elem_id="classify-button")
        with gr.Column():
            labels = gr.Label(label="Labels", elem_id="labels")
            rollout = gr.Image(
                label="Attention rollout", type="pil", format="png", interactive=False, elem_id="rollout",
                height=DISPLAY_SIZE,
            )  # fmt: skip
            status = gr.Markdown(elem_id="status")
            gr.Markdown(rollout_note(pipeline), elem_id="attention-note")
    button.click(
        partial(classify_outputs, pipeline, max_pixels=max_pixels),
        [image, top_k],
        [labels, rollout, status],
        preprocess=False,
        api_name="classify",
        show_progress="minimal",
    )
    image.change(lambda: (None, None, ""), None, [labels, rollout, status], api_visibility="private")


def build_demo(
    pipeline: CaptionPipeline | ClassifyPipeline,
    *,
    source: str | os.PathLike = "",
    examples_dir: str | os.PathLike | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    webcam: bool = False,
) -> gr.Blocks:
    """Build the demo page of a loaded model (`vitcap.load`); call `launch` to serve it.

    The model is run once on an example image first, so the first click does not pay for one-time set-up.

    Args:
        pipeline: A captioner or classifier pipeline.
        source: The checkpoint or export folder it came from (named in the model card).
        examples_dir: Where to write the example images; a new temporary folder by default.
        max_pixels: Uploads with more pixels are refused with a message (None: `load_image`'s default limit).
        webcam: Offer the webcam as an image source (off by default).
    """
    task = pipeline.task
    folder = Path(examples_dir) if examples_dir is not None else Path(tempfile.mkdtemp(prefix="vitcap-demo-"))
    examples = write_examples(folder, task, int(pipeline.preprocessing.get("img_size", 64)))
    warm_up(pipeline, load_image(examples[0]))
    name = Path(source).name if source else task
    with gr.Blocks(title=f"vitcap demo: {name}", analytics_enabled=False) as demo:
        gr.Markdown(
            f"## vitcap {task} demo\nUpload an image (or pick an example) and press "
            f"**{'Caption' if task == 'captioning' else 'Classify'}**. Runs locally; nothing leaves this machine."
        )
        if isinstance(pipeline, CaptionPipeline):
            _caption_page(pipeline, examples, max_pixels, webcam)
        else:
            _classify_page(pipeline, examples, max_pixels, webcam)
        with gr.Accordion("Model card", open=True):
            gr.Markdown(model_card(pipeline, source), elem_id="model-card")
    return demo


def launch(demo: gr.Blocks, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """Serve ``demo`` on ``host:port`` in a background thread (never a public share link); returns its local URL.

    The server runs until ``demo.close()`` (the command line waits for Ctrl-C first).

    Raises:
        OSError: The port is taken, or ``host`` is not an address of this machine.
    """
    demo.queue(default_concurrency_limit=1)  # one model call at a time: a CPU model gains nothing from more
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        quiet=True,
        max_file_size=MAX_FILE_SIZE,
        css=CSS,
    )
    return url
