"""Caption files: one function, ``read_captions``, for every supported layout.

Formats (``format="auto"`` detects them; a directory holding exactly one caption file such as ``captions.txt``,
``captions.jsonl``, ``Flickr8k.token.txt`` or ``dataset_*.json`` means that file, otherwise the folder format),
one reader module each, listed in ``registry``:

- ``"coco"``: COCO captions JSON, ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.
- ``"karpathy"``: Karpathy split JSON (``dataset_coco.json`` style), ``{"images": [{"filename", "filepath"?,
  "split", "sentences": [{"raw"}]}]}``; ``restval`` counts as ``train``.
- ``"csv"``: CSV with a header naming ``image`` and ``caption`` (one row per caption, e.g. the Kaggle Flickr8k
  ``captions.txt``) or ``captions`` (a JSON list of strings per row), and optionally ``split``. Parsed with the
  ``csv`` module, so quoted captions may contain commas.
- ``"flickr_token"``: ``Flickr8k.token.txt`` style, ``NAME#i<TAB>caption`` per line.
- ``"jsonl"``: one JSON object per line with ``image`` and ``caption`` (str) or ``captions`` (list), optionally
  ``split``.
- ``"folder"``: a directory of images, each with a sidecar ``NAME.txt`` holding one caption per line (blank
  lines ignored).

Captions are stripped and runs of whitespace collapsed to one space; no other change is made.

Image paths are relative to ``images_dir``. When it is not given it is the folder itself (``"folder"``), or the
caption file's directory, or its ``images/`` subdirectory when the first entries are found there instead.

Splits come from the format (Karpathy, a ``split`` column/key), else from a ``splits.csv`` (``image,split``)
beside the caption file (inside the folder for ``"folder"``), else ``CaptionSet.split_images`` assigns them by a
hash of the image id. Split names are normalised: ``restval`` -> ``train``; ``dev``, ``valid``, ``validation``
-> ``val``.

Problems with individual entries (malformed lines, missing image files, empty captions, paths that escape the
image root, conflicting or missing splits) are all collected and raised together as one ``ManifestError``
listing each with its file and line (or JSON index); ``skip_bad=True`` (``--data.skip_bad true``) drops the bad
entries with one warning that lists them. Files that cannot be read at all (not UTF-8, not JSON, no header) raise
``CaptionFormatError`` naming the file and line. Both are the `vitcap.errors` types.
"""

from vitcap.data.captions.caption_set import CaptionSet
from vitcap.data.captions.problems import Problem, format_problems, manifest_error
from vitcap.data.captions.read import read_captions
from vitcap.data.captions.registry import FORMATS, detect_format
from vitcap.data.captions.splits import SPLITS, hash_split, normalize_split
from vitcap.data.captions.text import read_text
from vitcap.errors import CaptionFormatError, ManifestError

__all__ = [
    "FORMATS",
    "SPLITS",
    "CaptionFormatError",
    "CaptionSet",
    "ManifestError",
    "Problem",
    "detect_format",
    "format_problems",
    "hash_split",
    "manifest_error",
    "normalize_split",
    "read_captions",
    "read_text",
]
